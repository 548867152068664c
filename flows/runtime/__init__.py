"""How radflow's flows run, not what they do: the `radflow serve` stack (server, work pools,
deployments, workers), Prefect's temporary server started early (and a new Prefect home's
database seeded from a template), the task-runner choice, and the warm worker that keeps the
arrival queue's flows imported.

Nothing here composes tasks; `flows/` beside it holds the flows themselves, and the flows never
import this package (`radflow.cli` and the tests do)."""
