"""What the tests share (bench/ imports some of it too): lakes, corpora, servers, helpers."""
