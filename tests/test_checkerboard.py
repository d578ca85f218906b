"""The checkerboard task: balanced, decoupled labels, honest evidence, and a learnable direction."""
import pytest
import torch
import torch.nn.functional as F

from uinfo_fast.tasks.checkerboard import (
    DEFAULT_COHERENCES,
    CheckerboardNet,
    CheckerboardTrials,
    accuracy,
    make_checkerboard_trials,
    split_trials,
)
from uinfo_fast.tasks.checkerboard import input_dim, render_inputs


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # These tensors are tiny: extra threads only add contention on a shared machine.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def trials():
    return make_checkerboard_trials(10_000, seed=1)


def test_shapes_and_dtypes(trials):
    assert len(trials) == 10_000
    assert trials.inputs.shape == (10_000, 102) and trials.inputs.dtype == torch.float32
    assert trials.input_dim == 102
    for name in ("direction", "colour", "targets"):
        y = getattr(trials, name)
        assert y.shape == (10_000,) and y.dtype == torch.int64
        assert set(y.unique().tolist()) == {0, 1}
    assert trials.coherence.dtype == torch.float32
    assert set(trials.labels()) == {"direction", "colour", "targets"}
    assert trials.labels()["direction"] is trials.direction


def test_labels_balanced(trials):
    for name, y in trials.labels().items():
        assert abs(y.float().mean().item() - 0.5) < 0.03, name


def test_direction_decoupled_from_colour(trials):
    c, t, d = trials.colour, trials.targets, trials.direction
    assert torch.equal(d, c ^ t)
    for v in (0, 1):
        assert abs(d[c == v].float().mean().item() - 0.5) < 0.03
        assert abs(t[c == v].float().mean().item() - 0.5) < 0.03
    # The four (colour, targets) cells are equally frequent.
    counts = torch.bincount(2 * c + t, minlength=4).float() / len(trials)
    assert torch.allclose(counts, torch.full((4,), 0.25), atol=0.02)


def test_target_encoding(trials):
    left, right = trials.inputs[:, -2], trials.inputs[:, -1]
    # targets 0 = red-left: left target red (-1), right target green (+1).
    assert torch.equal(left, 2.0 * trials.targets.float() - 1.0)
    assert torch.equal(right, -left)


def test_coherence_sign_and_levels(trials):
    sign = torch.where(trials.colour == 1, 1.0, -1.0)
    assert torch.all(trials.coherence * sign > 0)
    levels = torch.tensor(DEFAULT_COHERENCES, dtype=torch.float32)
    assert torch.equal(trials.coherence.abs().unique(), levels.unique())


def test_board_evidence_follows_colour_and_coherence():
    t = make_checkerboard_trials(8000, seed=2, noise=0.0)
    board = t.inputs[:, :-2]
    assert set(board.unique().tolist()) == {-1.0, 1.0}
    green = (board > 0).float().mean(1)
    assert green[t.colour == 1].mean() > 0.5 > green[t.colour == 0].mean()
    # The green fraction tracks 0.5 + coherence / 2, so the evidence grows with |coherence|.
    gaps = []
    for c in DEFAULT_COHERENCES:
        rows = t.coherence.abs() == c
        gap = (green[rows & (t.colour == 1)].mean() - green[rows & (t.colour == 0)].mean()).item()
        assert abs(gap - c) < 0.03, c
        gaps.append(gap)
    assert gaps == sorted(gaps)
    # With input noise the evidence survives on average, board mean = signed coherence.
    noisy = make_checkerboard_trials(8000, seed=2, noise=1.0)
    mean = noisy.inputs[:, :-2].mean(1)
    assert torch.allclose(mean[noisy.coherence.abs() == 0.9].abs().mean(), torch.tensor(0.9), atol=0.03)
    assert torch.corrcoef(torch.stack([mean, noisy.coherence]))[0, 1] > 0.9


def test_deterministic_for_a_seed():
    before = torch.random.get_rng_state()
    a = make_checkerboard_trials(500, seed=7)
    b = make_checkerboard_trials(500, seed=7)
    c = make_checkerboard_trials(500, seed=8)
    assert torch.equal(torch.random.get_rng_state(), before)  # global RNG untouched
    for f in ("inputs", "direction", "colour", "targets", "coherence"):
        assert torch.equal(getattr(a, f), getattr(b, f)), f
    assert not torch.equal(a.inputs, c.inputs)
    assert not torch.equal(a.direction, c.direction)


def test_custom_board_and_levels():
    t = make_checkerboard_trials(40, seed=0, board_size=9, coherences=[0.5], noise=0)
    assert t.inputs.shape == (40, 11)
    assert torch.equal(t.coherence.abs(), torch.full((40,), 0.5))


@pytest.mark.parametrize("kwargs,match", [
    ({"n": 0}, "n must be"),
    ({"n": 2.5}, "n must be"),
    ({"seed": "x"}, "seed must be"),
    ({"coherences": ()}, "coherences must be"),
    ({"coherences": (0.0, 0.5)}, "coherences must be"),
    ({"coherences": (1.5,)}, "coherences must be"),
    ({"coherences": ("a",)}, "coherences must be"),
    ({"noise": -0.1}, "noise must be"),
    ({"noise": float("nan")}, "noise must be"),
    ({"board_size": 0}, "board_size must be"),
    ({"coding": "pixels"}, "coding must be"),
    ({"coherence_noise": -1.0}, "coherence_noise must be"),
])
def test_make_trials_rejects(kwargs, match):
    args = {"n": 10, **kwargs}
    with pytest.raises(ValueError, match=match):
        make_checkerboard_trials(args.pop("n"), **args)


@pytest.mark.parametrize("kwargs,match", [
    ({"input_dim": 0}, "input_dim must be"),
    ({"hidden": ()}, "hidden must be"),
    ({"hidden": (10, 0)}, "hidden must be"),
    ({"num_outputs": 1}, "num_outputs must be"),
    ({"activation": "gelu"}, "activation must be"),
])
def test_net_rejects(kwargs, match):
    with pytest.raises(ValueError, match=match):
        CheckerboardNet(**{"input_dim": 4, **kwargs})


def test_split(trials):
    train, val = split_trials(trials, val_fraction=0.1, seed=3)
    assert isinstance(train, CheckerboardTrials) and (len(train), len(val)) == (9000, 1000)
    both = torch.cat([train.inputs, val.inputs])
    assert torch.equal(both.sort(0).values, trials.inputs.sort(0).values)  # a partition
    again = split_trials(trials, val_fraction=0.1, seed=3)[1]
    assert torch.equal(again.inputs, val.inputs)
    for bad in (0.0, 1.0, -0.2):
        with pytest.raises(ValueError, match="val_fraction"):
            split_trials(trials, val_fraction=bad)
    with pytest.raises(ValueError, match="val_fraction"):
        split_trials(trials.subset(slice(0, 3)), val_fraction=0.01)


def test_net_structure_and_hooks():
    net = CheckerboardNet(102, hidden=(20, 10))
    names = dict(net.named_children())
    assert list(names) == ["hidden1", "hidden2", "out"]
    captured = {}
    net.hidden1.register_forward_hook(lambda m, i, o: captured.setdefault("h1", o))
    out = net(torch.randn(5, 102))
    assert out.shape == (5, 2)
    assert captured["h1"].shape == (5, 20) and bool((captured["h1"] >= 0).all())  # post-ReLU
    assert CheckerboardNet(6, hidden=(8,), activation="tanh")(torch.randn(3, 6)).shape == (3, 2)


def test_small_net_learns_direction():
    """Paper settings (batch 32, lr 0.05) on 2,000 trials: held-out direction accuracy well above chance."""
    data = make_checkerboard_trials(2000, seed=5)
    train, val = split_trials(data, val_fraction=0.1, seed=5)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        net = CheckerboardNet(data.input_dim)
        opt = torch.optim.SGD(net.parameters(), lr=0.05)
        order = torch.cat([torch.randperm(len(train)) for _ in range(8)])  # 400 steps ~ 7 epochs
        for step in range(400):
            idx = order[step * 32:(step + 1) * 32]
            loss = F.cross_entropy(net(train.inputs[idx]), train.direction[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    acc = accuracy(net, val)
    assert net.training  # accuracy() restores the train/eval mode
    assert acc > 0.75, acc



# --- the four-input coding, fresh trials, the shuffled-label control -----------------------------

def test_four_input_coding_is_targets_then_red_and_green_coherence():
    t = make_checkerboard_trials(20_000, seed=2, coding="four", coherences=(0.3, 0.9))
    assert t.inputs.shape == (20_000, 4) and t.input_dim == input_dim("four") == 4
    left = 2.0 * t.targets.float() - 1.0
    assert torch.equal(t.inputs[:, 0], left) and torch.equal(t.inputs[:, 1], -left)  # targets are noise-free
    red_noise, green_noise = t.inputs[:, 2] + t.coherence, t.inputs[:, 3] - t.coherence
    for noise in (red_noise, green_noise):
        assert abs(float(noise.mean())) < 0.005 and float(noise.std()) == pytest.approx(0.1, rel=0.03)
    assert float(torch.corrcoef(torch.stack([red_noise, green_noise]))[0, 1]) == pytest.approx(0.0, abs=0.03)
    colour = (t.inputs[:, 3] > t.inputs[:, 2]).long()  # green evidence beats red: the ideal observer
    assert float((colour == t.colour).float().mean()) > 0.99


def test_render_inputs_redraws_only_the_noise():
    t = make_checkerboard_trials(500, seed=3, coding="four")
    a = render_inputs(t.coherence, t.targets, torch.Generator().manual_seed(7), coding="four")
    b = render_inputs(t.coherence, t.targets, torch.Generator().manual_seed(7), coding="four")
    c = render_inputs(t.coherence, t.targets, torch.Generator().manual_seed(8), coding="four")
    assert torch.equal(a, b) and not torch.equal(a[:, 2:], c[:, 2:]) and torch.equal(a[:, :2], c[:, :2])
    board = render_inputs(t.coherence, t.targets, torch.Generator().manual_seed(7))
    assert board.shape == (500, input_dim("board"))


def _task(**kw):
    from uinfo_fast.experiments import RunConfig
    from uinfo_fast.tasks import build_task

    cfg = RunConfig.for_task("checkerboard", n_train=400, n_test=300, probe_train=200, probe_val=50, probe_test=100,
                             **kw)
    return cfg, build_task(cfg)


def test_fresh_trials_draw_new_noise_each_step_and_the_same_on_a_rerun():
    from uinfo_fast.experiments import Plan

    cfg, task = _task(input_coding="four", fresh_trials=True, hidden=[16, 8])
    plan = Plan(cfg, task.train_x.shape[0])
    idx = plan.indices(0)
    step0 = task.preprocess(task.train_x[idx], plan.augment_generator(0))
    again = task.preprocess(task.train_x[idx], plan.augment_generator(0))
    other = task.preprocess(task.train_x[idx], plan.augment_generator(1))
    assert step0.shape == (idx.shape[0], 4) and torch.equal(step0, again) and not torch.equal(step0, other)
    assert torch.equal(step0[:, :2], other[:, :2])  # the trials are the same, their noise is new
    assert [m.out_features for m in (task.model.hidden1[0], task.model.hidden2[0])] == [16, 8]
    assert task.probe_train_x.shape[1] == 4  # probes see fixed trials of the same coding


def test_shuffled_control_is_the_irrelevant_label_permuted():
    _, task = _task(shuffled_control=True)
    for labels in (task.probe_train_labels, task.probe_val_labels, task.probe_test_labels):
        shuffled, colour = labels["shuffled"], labels["colour"]
        assert torch.equal(torch.bincount(shuffled), torch.bincount(colour)) and not torch.equal(shuffled, colour)


@pytest.mark.parametrize("task, kw, match", [
    ("images", {"hidden": [10]}, "hidden is not an option of the images task"),
    ("images", {"fresh_trials": True}, "fresh_trials is not an option"),
    ("checkerboard", {"coarse_groups": [[0], [1]]}, "coarse_groups is not an option of the checkerboard task"),
    ("checkerboard", {"input_coding": "pixels"}, "input_coding must be"),
])
def test_task_options_belong_to_their_task(task, kw, match):
    from uinfo_fast.experiments import RunConfig

    with pytest.raises(ValueError, match=match):
        RunConfig.for_task(task, **kw)
