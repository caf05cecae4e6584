"""The architecture VAE and GAN on the NAS-Bench-201 graph encoding."""

from __future__ import annotations

import numpy as np
import pytest
import torch


@pytest.fixture(scope="module")
def cells():
    from dnas_search_spaces.nb201 import NB201Space

    space = NB201Space()
    rng = np.random.default_rng(0)
    allc = list(space.all_genotypes())
    order = rng.permutation(len(allc))
    return space, [space.encode(allc[i]) for i in order[:2000]], [space.encode(allc[i]) for i in order[2000:2300]]


@pytest.fixture(scope="module")
def vae(cells):
    from dnas_plugins.generators import GraphVAE

    _, train, _ = cells
    v = GraphVAE(epochs=30, hidden=64, latent_dim=16, batch_size=256, lr=4e-3)
    v.fit(train)
    return v


def test_vae_reconstructs_held_out_cells(cells, vae):
    _, _, held = cells
    assert vae.reconstruction_accuracy(held) >= 0.95


def test_vae_prior_samples_are_valid_and_diverse(cells, vae):
    space = cells[0]
    drawn = vae.generate(300, np.random.default_rng(1))
    valid = []
    for g in drawn:
        try:
            valid.append(space.decode(g).hash())
        except ValueError:
            pass
    assert len(valid) / len(drawn) >= 0.95
    assert len(set(valid)) >= 150


def test_vae_state_round_trips_through_weights_only_load(cells, vae, tmp_path):
    from dnas_plugins.generators import GraphVAE

    _, _, held = cells
    torch.save(vae.state_dict(), tmp_path / "vae.pt")
    back = GraphVAE(hidden=64, latent_dim=16)
    back.load_state_dict(torch.load(tmp_path / "vae.pt", weights_only=True))
    assert np.allclose(back.encode(held[:20]), vae.encode(held[:20]), atol=1e-6)
    with pytest.raises(ValueError, match="latent_dim"):
        GraphVAE(hidden=64, latent_dim=4).load_state_dict(vae.state_dict())


def test_generators_refuse_graphs_of_another_layout(cells, vae):
    from dnas_core import GraphEncoding

    other = GraphEncoding(np.zeros((3, 3)), np.eye(3), ("a", "b", "c"))
    with pytest.raises(ValueError, match="one generator per search space"):
        vae.encode([other])


def test_gan_concentrates_generation_on_the_top_set(cells):
    """Trained on a 'top set' of cells made only of 3x3 convolutions and skips, the
    generator's samples move towards those operations and the discriminator rates
    the top set above random cells."""
    from dnas_plugins.generators import GraphGAN
    from dnas_search_spaces.nb201.space import NODE_TYPES

    space, train, _ = cells
    rng = np.random.default_rng(0)
    ops = ("nor_conv_3x3", "skip_connect")
    top = [space.encode(space.genotype(tuple(ops[k] for k in rng.integers(0, 2, 6)))) for _ in range(40)]
    gan = GraphGAN(steps=40, hidden=32, seed=0)
    gan.ensure_built(top[0])
    share = lambda graphs: np.mean([NODE_TYPES[i] in ops for g in graphs for i in g.ops.argmax(1)[1:-1]])  # noqa: E731
    before = share(gan.generate(200, np.random.default_rng(2)))
    gan.fit(top)
    after = share(gan.generate(200, np.random.default_rng(2)))
    assert after > before + 0.2, (before, after)
    assert gan.discriminate(top[:20]).mean() > gan.discriminate(train[:20]).mean()


def test_gan_discriminator_learns_from_known_weak_architectures(cells):
    """Given the evaluated cells outside the top set as negatives, the discriminator
    rates held-out weak cells (pooling and zero ops) below held-out strong ones (3x3
    and 1x1 convolutions), which it barely tells apart from one short round on
    generated fakes alone."""
    from dnas_plugins.generators import GraphGAN

    space, _, _ = cells
    rng = np.random.default_rng(0)

    def split(ops, sizes):
        # The 2^6 cells over two ops, shuffled and cut into disjoint sets.
        every = [tuple(ops[(k >> b) & 1] for b in range(6)) for k in range(64)]
        order = rng.permutation(64)
        out, at = [], 0
        for n in sizes:
            out.append([space.encode(space.genotype(every[i])) for i in order[at: at + n]])
            at += n
        return out

    top, held_strong = split(("nor_conv_3x3", "nor_conv_1x1"), (20, 20))
    negatives, held_weak = split(("avg_pool_3x3", "none"), (40, 20))
    gaps = {}
    for use in (False, True):
        gan = GraphGAN(steps=10, hidden=32, seed=0)
        gan.fit(top, negatives=negatives if use else ())
        gaps[use] = gan.discriminate(held_strong).mean() - gan.discriminate(held_weak).mean()
    assert gaps[True] > 0.3, gaps
    assert gaps[True] > gaps[False] + 0.1, gaps


def test_gan_fit_names_the_problem_with_its_inputs(cells):
    from dnas_core import GraphEncoding
    from dnas_plugins.generators import GraphGAN

    space, train, _ = cells
    with pytest.raises(ValueError, match="at least one graph"):
        GraphGAN(steps=1).fit([], negatives=train[:3])
    other = GraphEncoding(np.zeros((3, 3)), np.eye(3), ("a", "b", "c"))
    with pytest.raises(ValueError, match="one generator per search space"):
        GraphGAN(steps=1).fit(train[:3], negatives=[other])
