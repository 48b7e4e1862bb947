"""What a config costs before it runs: tokens, FLOPs and memory per block (``estimate``) and the memory of a device
(``device_memory``). Imports only ``vitdense.models``; the tasks use it for their model summary."""
