"""The resumable training loader: a restored loader hands out the rest of the epoch, and no loader moves torch's
global RNG (which dropout draws from), so a resumed run draws the masks of the uninterrupted one."""

import torch

from captioner.data.resumable import ResumableDataLoader, example_index


class Indices(torch.utils.data.Dataset):
    """Example i is i; the sampler hands over (epoch, index)."""

    def __len__(self) -> int:
        return 12

    def __getitem__(self, key: tuple[int, int]) -> int:
        return example_index(key)


def loader() -> ResumableDataLoader:
    return ResumableDataLoader(Indices(), batch_size=2, shuffle=True, seed=7, drop_last=True)


def test_a_restored_loader_hands_out_the_rest_of_the_epoch_without_drawing_from_the_global_rng():
    straight = loader()
    straight.epoch_sampler.set_epoch(1)
    batches = iter(straight)
    seen = [next(batches).tolist() for _ in range(2)]
    state = straight.state_dict()
    rest = [b.tolist() for b in batches]
    assert state == {"batches": 2, "epoch": 1} and len(seen) + len(rest) == 6

    resumed = loader()  # a new process: a new loader, restored from the checkpoint, into the same epoch
    resumed.load_state_dict(state)
    resumed.epoch_sampler.set_epoch(1)
    before = torch.get_rng_state()
    assert [b.tolist() for b in resumed] == rest
    assert torch.equal(torch.get_rng_state(), before)  # building and running its iterator drew nothing
