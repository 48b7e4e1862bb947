"""torch Datasets over the readers' records: segmentation pairs (``segmentation``), detection and instance items
(``detection``), and the seeded synthetic generators every task's offline default and the tests use
(``synthetic``)."""
