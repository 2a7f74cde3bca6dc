"""Where datasets come from: FERPlus, RAF-DB and AffectNet read from their downloads, the RAN authors'
subset lists (fetched at a pinned commit), class-order mapping between them, and the perturbed test set
built from another folder. Each builder writes through :mod:`ran.data.format`."""
