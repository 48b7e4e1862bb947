"""LightningDataModules, one per kind of source, over ``base.BaseDataModule``: splits, transforms, batching, and the
classes / input size / bands linked into the task. Each composes a reader and a dataset; none parses files itself.
Importing ``vitdense.data`` registers them all."""
