"""The on-disk dataset format: Parquet shards plus a README.md card, written as rows arrive
(``writer``), checked before reading (``declared``, ``shards``, ``labelled``) and read back (``folder``);
``images`` and ``parallel`` are the PNG bytes and the in-order worker pool the builders share."""
