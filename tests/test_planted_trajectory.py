"""The planted models of the trajectory claims (cos/models/scripted.py): the shared sampler records exactly the
scripted x̂0, and each script plants what its control says, read with the claims' own readouts."""
import numpy as np
import pytest
import torch

from cos.claims.memory import ANCHOR_TASKS, anchor_fidelity
from cos.claims.perception import MOTION_TASKS, grounding_and_motion, half_rise
from cos.controls import answer_prior, scripted
from cos.models.scripted import anchor_lapse, grounding_lag, pick, row_rng, wrong_then_right
from cos.readouts import commit_step, shows_answer
from cos.sampler import Sampler
from cos.taskrun import conditioning, make_batch
from cos.tasks import make_instance
from cos.tasks.base import deciding_frames

STEPS = 10


def sample(system, insts, seeds=(0,), steps=STEPS, size=8):
    batch = make_batch(insts, seeds, size, size)
    system.batch_binder(system, batch)
    res = Sampler(system).sample(conditioning(batch, None), batch.seeds, steps, guidance_scale=1.0, record=("x0",))
    return batch, res


def test_sampler_records_exactly_the_scripted_x0_and_ends_on_its_last_step():
    system = scripted("wrong_then_right", STEPS)
    insts = [make_instance("rotation", 3, 9), make_instance("maze", 1, 9)]
    batch, res = sample(system, insts, seeds=(0, 1))
    script = system.transformer.script                                  # (B, S, 3, F, H, W)
    for i in range(STEPS):
        assert torch.allclose(res["x0"][i], script[:, i], atol=1e-5), i
    assert torch.allclose(res.latents, script[:, -1], atol=1e-5)
    # the rows differ by their noise seed (where the switch happens), not by the noise itself
    assert not torch.equal(script[0], script[1])


def test_a_schedule_the_script_was_not_written_for_is_an_error():
    system = scripted("wrong_then_right", STEPS)
    batch = make_batch([make_instance("pattern", 0, 9)], [0], 8, 8)
    system.batch_binder(system, batch)
    with pytest.raises(ValueError, match="not a step"):
        Sampler(system).sample(conditioning(batch, None), [0], STEPS + 2, guidance_scale=1.0)


def switch_steps(inst, steps):
    """Per deciding frame (> 0): the step from which it shows the answer (the claim's readout)."""
    frames = [f for f in deciding_frames(inst) if f > 0]
    return [commit_step([shows_answer(inst, inst.candidate_weights(v, [f]), f, inst.answer) for v in steps])
            for f in frames]


@pytest.mark.parametrize("task", ["maze", "pattern", "rotation", "tictactoe"])
def test_wrong_then_right_commits_wrong_then_switches_every_frame_at_once(task):
    for seed in range(4):
        inst = make_instance(task, seed, 9)
        steps = wrong_then_right()(inst, row_rng(inst, 0, "t"), STEPS)
        w = [inst.candidate_weights(v) for v in steps]
        wrong = [int(torch.argmax(x)) != inst.answer and float(x.max()) > 0.5 for x in w]
        assert not wrong[0] and wrong[1]                                # blend at step 0, then committed wrong
        assert int(torch.argmax(w[-1])) == inst.answer and inst.passed(steps[-1])
        sw = switch_steps(inst, steps)
        assert max(sw) == min(sw) == wrong.index(False, 1)              # every frame at the first right step


@pytest.mark.parametrize("task", ["maze", "pattern", "rotation", "tictactoe"])
def test_per_frame_switch_spreads_the_frames_over_more_than_one_step(task):
    for seed in range(4):
        inst = make_instance(task, seed, 9)
        steps = wrong_then_right(per_frame_share=1.0)(inst, row_rng(inst, 0, "t"), STEPS)
        w = [inst.candidate_weights(v) for v in steps]
        assert any(int(torch.argmax(x)) != inst.answer and float(x.max()) > 0.5 for x in w[1:])
        assert int(torch.argmax(w[-1])) == inst.answer and inst.passed(steps[-1])
        sw = switch_steps(inst, steps)
        assert max(sw) - min(sw) > 1 and sw == sorted(sw)               # a wave in frame order


@pytest.mark.parametrize("lag", [-3, -1, 0, 1, 2, 4])
def test_grounding_lag_sets_the_half_rises_apart_by_exactly_the_lag(lag):
    for task in MOTION_TASKS:
        for split in ("id", "ood"):
            for seed in range(3):
                inst = make_instance(task, seed, 9, split)
                steps = grounding_lag((lag,))(inst, row_rng(inst, 0, "t"), STEPS)
                g, m = grounding_and_motion(inst, steps)
                hg, hm = half_rise(g), half_rise(m)
                assert hg is not None and hm is not None, (task, split, seed)
                assert hm - hg == pytest.approx(lag / STEPS), (task, split, seed, g, m)
                if lag > 0:   # grounded while still: x̂0 departs on the target alone and nothing moves
                    k = int(round(hg * STEPS))
                    assert g[k] == pytest.approx(1.0) and m[k] == 0.0


@pytest.mark.parametrize("right", [0.9, 0.5, None])
def test_pick_ends_on_one_candidate_and_on_the_answer_as_often_as_planted(right):
    hits, expect = [], []
    for task in ("grounding", "pattern", "rotation"):
        for seed in range(60):
            inst = make_instance(task, seed, 5, "ood")
            final = pick(right)(inst, row_rng(inst, 0, "t"), 3)[-1]
            assert min(float((final - c).abs().max()) for c in inst.candidates) < 1e-6
            hits.append(inst.score(final))
            expect.append(1 / len(inst.candidates) if right is None else right)
    p, n = float(np.mean(expect)), len(hits)
    assert set(hits) <= {0.0, 1.0}
    assert abs(np.mean(hits) - p) < 4 * np.sqrt(p * (1 - p) / n)        # binomial: 4 standard errors


def test_anchor_lapse_loses_the_anchor_mid_way_in_every_row_and_draws_nothing():
    """lapse-mid-way as it always was: every row lapses over 40-60% of the schedule, and its rows' generators
    are left untouched (nothing drawn), so its runs are the same bit for bit."""
    for task in ANCHOR_TASKS:
        for seed in range(3):
            inst = make_instance(task, seed, 9)
            rng = row_rng(inst, 0, "t")
            fid = [anchor_fidelity(inst, v) for v in anchor_lapse()(inst, rng, STEPS)]
            assert fid == pytest.approx([1, 1, 1, 1, 0.5, 0.5, 1, 1, 1, 1]), (task, seed)
            assert rng.random() == row_rng(inst, 0, "t").random()
    assert scripted("anchor_lapse", STEPS).weights_hash == f"scripted:anchor_lapse::steps={STEPS}:shift=3.0"


def test_anchor_lapse_with_a_share_lapses_that_share_of_the_rows_and_keeps_the_others_exact():
    lapsed = {}
    for task in ANCHOR_TASKS:
        for i in range(50):
            inst = make_instance(task, i, 9)
            for seed in (0, 1):
                fid = [anchor_fidelity(inst, v) for v in anchor_lapse(share=0.5)(inst, row_rng(inst, seed, "t"), STEPS)]
                lapsed[inst.id, seed] = fid[4] < 1
                expect = [1, 1, 1, 1, 0.5, 0.5, 1, 1, 1, 1] if lapsed[inst.id, seed] else [1] * STEPS
                assert fid == pytest.approx(expect), (inst.id, seed)
    p = float(np.mean(list(lapsed.values())))
    assert len(lapsed) == 200 and abs(p - 0.5) < 0.15                   # binomial: 4.2 standard errors
    # the decision is the row's own: the two noise seeds of an instance (and so two draws) disagree somewhere
    assert any(lapsed[k, 0] != lapsed[k, 1] for k, _ in lapsed)
    with pytest.raises(ValueError, match="share"):
        anchor_lapse(share=1.5)


def test_answer_prior_binds_the_planted_prior_per_split():
    system = answer_prior({"id": 0.9, "ood": None})
    insts = [make_instance("pattern", 0, 5, "id"), make_instance("pattern", 0, 5, "ood")]
    batch, _ = sample(system, insts, steps=4, size=16)
    prior = system.transformer.history[0]                               # at s = 1 the posterior is the prior
    k_id, k_ood = (len(i.candidates) for i in insts)
    assert float(prior[0, insts[0].answer]) == pytest.approx(0.9)
    assert torch.allclose(prior[0, :k_id].sum(), torch.tensor(1.0, dtype=prior.dtype))
    assert torch.allclose(prior[1, :k_ood], torch.full((k_ood,), 1 / k_ood, dtype=prior.dtype))
    assert system.weights_hash != answer_prior(0.9).weights_hash != answer_prior(None).weights_hash


def test_planted_models_never_share_a_fingerprint():
    systems = [scripted("wrong_then_right", STEPS), scripted("wrong_then_right", STEPS, per_frame_share=1.0),
               scripted("grounding_lag", STEPS, lags=(2, 3, 4)), scripted("grounding_lag", STEPS, lags=(-2, -3, -4)),
               scripted("pick", 3, right=0.9), scripted("pick", 3, right={"id": 0.9, "ood": None}),
               scripted("anchor_lapse", STEPS), scripted("anchor_lapse", STEPS, share=0.5),
               answer_prior(0.65), answer_prior(0.46)]
    assert len({s.fingerprint for s in systems}) == len(systems)
