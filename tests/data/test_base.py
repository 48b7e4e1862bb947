"""DataModule base: the distributed sampler that never repeats an item to even out the ranks."""


def test_unrepeated_distributed_sampler_takes_every_item_once() -> None:
    from vitdense.data.datamodules.base import UnrepeatedDistributedSampler

    parts = [list(UnrepeatedDistributedSampler(list(range(5)), num_replicas=2, rank=r)) for r in (0, 1)]
    assert parts == [[0, 2, 4], [1, 3]]
    assert [len(UnrepeatedDistributedSampler(list(range(5)), num_replicas=2, rank=r)) for r in (0, 1)] == [3, 2]
