"""StyleGAN-NADA's CLIP losses against hand computations, on the real clip code with tiny random weights."""

import functools
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from nada_sweep.adapt.losses import (
    IMAGENET_TEMPLATES,
    PART_PROMPTS,
    ClipGuidance,
    directional_loss,
    global_loss,
    image_direction_target,
    indomain_loss,
    manifold_loss,
    part_directions,
    part_weighted_loss,
    patch_directional_loss,
    template_text_embedding,
    text_direction,
    tt_direction_loss,
)
from nada_sweep.errors import UserError
from nada_sweep.models.clip_models import build_tiny_clip, check_prompt, clip, wrap_clip


def tiny(seed=0):
    """A fresh model, with empty text-embedding cache."""
    return wrap_clip(build_tiny_clip(seed=seed), f"tiny{seed}")


@functools.cache
def shared(seed=0):
    """One model per seed for the whole module: text embeddings are computed once (slow on CPU)."""
    return tiny(seed)


def images(n, seed, size=64):
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def hand_template_embeddings(model, text):
    """Each template with `text`, through the raw clip API, normalised: [T, D]."""
    tokens = clip.tokenize([t.format(text) for t in IMAGENET_TEMPLATES])
    with torch.no_grad():
        emb = model.model.encode_text(tokens)
    return emb / emb.norm(dim=-1, keepdim=True)


def unit(i, dim=4):
    return F.one_hot(torch.tensor(i), dim).float()


def test_templates_are_the_imagenet_set():
    assert len(IMAGENET_TEMPLATES) == 79 and len(set(IMAGENET_TEMPLATES)) == 79
    assert all(t.count("{}") == 1 for t in IMAGENET_TEMPLATES)
    assert {"a bad photo of a {}.", "a sketch of a {}.", "itap of my {}."} <= set(IMAGENET_TEMPLATES)


def test_text_direction_matches_hand_computation():
    model = tiny()
    source, target = hand_template_embeddings(model, "photo"), hand_template_embeddings(model, "pencil sketch")
    expected = (target - source).mean(dim=0)
    expected = expected / expected.norm()
    got = text_direction(model, "photo", "pencil sketch")
    assert got.shape == (32,) and torch.allclose(got, expected, atol=1e-6)
    assert math.isclose(got.norm().item(), 1.0, rel_tol=1e-6)
    got.zero_()  # the returned tensor is the caller's; the cache must not change
    assert torch.allclose(text_direction(model, "photo", "pencil sketch"), expected, atol=1e-6)
    assert not torch.allclose(text_direction(model, "pencil sketch", "photo"), expected)


def test_text_direction_is_cached_per_model_instance(monkeypatch):
    model = tiny()
    text_direction(model, "photo", "sketch")
    monkeypatch.setattr(model, "encode_texts", lambda texts: pytest.fail("encoded again"))
    text_direction(model, "photo", "sketch")
    template_text_embedding(model, "sketch")


def test_template_text_embedding_matches_hand_computation():
    model = shared()
    expected = hand_template_embeddings(model, "werewolf").mean(dim=0)
    assert torch.allclose(template_text_embedding(model, "werewolf"), expected / expected.norm(), atol=1e-6)


def test_directional_loss_on_constructed_embeddings():
    src = torch.stack([unit(0), 5 * unit(0)])
    dst = torch.stack([3 * unit(1), unit(1)])  # both samples: direction (e1 - e0) / sqrt(2)
    towards = (unit(1) - unit(0)) / math.sqrt(2)
    assert directional_loss(src, dst, towards).item() == pytest.approx(0.0, abs=1e-6)
    assert directional_loss(src, dst, -towards).item() == pytest.approx(2.0)
    assert directional_loss(src, dst, unit(2)).item() == pytest.approx(1.0)
    # Per-sample cosines are averaged: sample 0 goes e0 -> e1 (aligned, 0), sample 1 e1 -> e0 (opposite, 2).
    swapped_src = torch.stack([unit(0), 2 * unit(1)])
    swapped_dst = torch.stack([unit(1), 3 * unit(0)])
    assert directional_loss(swapped_src, swapped_dst, towards).item() == pytest.approx(1.0)
    per_sample = [directional_loss(swapped_src[i:i + 1], swapped_dst[i:i + 1], towards) for i in range(2)]
    assert [loss.item() for loss in per_sample] == pytest.approx([0.0, 2.0], abs=1e-6)


def test_global_loss_on_constructed_embeddings():
    dst = torch.stack([2 * unit(0), -unit(0), unit(1)])  # cosines to e0: 1, -1, 0
    at_100 = math.log(100)  # OpenAI's released models: 1 - cos
    assert global_loss(dst, 7 * unit(0), at_100).item() == pytest.approx((0 + 2 + 1) / 3)
    assert global_loss(dst[:1], unit(0), at_100).item() == pytest.approx(0.0, abs=1e-6)
    # Any other temperature scales the cosine as CLIP's logits do: 1 - exp(s) * cos / 100.
    assert global_loss(dst, unit(0), math.log(20)).item() == pytest.approx(((1 - 0.2) + (1 + 0.2) + 1) / 3)
    assert global_loss(dst, unit(0), torch.tensor(math.log(250))).item() == pytest.approx(
        ((1 - 2.5) + (1 + 2.5) + 1) / 3)


def reference_global_loss(model, dst, text):
    """The reference's form, through CLIP's own forward: mean(1 - logits_per_image / 100)."""
    logits_per_image, _ = model.model(model.preprocess(dst), clip.tokenize([text]))
    return (1 - logits_per_image / 100).mean()


def test_global_loss_is_clips_logits_over_100_for_a_model_not_at_100():
    model = tiny(3)
    with torch.no_grad():
        model.model.logit_scale.fill_(math.log(37.0))
    dst = images(3, 4)
    guidance = ClipGuidance([(model, 1.0)], source="photo", target="sketch", lambda_direction=0, lambda_global=1)
    got = guidance.loss(dst, guidance.embed_source(images(3, 5)))
    expected = reference_global_loss(model, dst, "a sketch")
    assert got.item() == pytest.approx(expected.item(), abs=1e-6)
    # ... which is not 1 - cos here (exp(logit_scale) = 37): the old form would differ by far more than rounding.
    cos = F.cosine_similarity(model.encode_images(dst), model.model.encode_text(clip.tokenize(["a sketch"])))
    assert abs(got.item() - (1 - cos).mean().item()) > 1e-3
    assert got.item() == pytest.approx((1 - 0.37 * cos).mean().item(), abs=1e-6)
    # The layer search's loss is the same form against the raw target text.
    assert guidance.global_text_loss(dst).item() == pytest.approx(
        reference_global_loss(model, dst, "sketch").item(), abs=1e-6)


def test_manifold_loss_on_constructed_embeddings():
    src = torch.stack([unit(0), unit(0)])
    dst = torch.stack([unit(0) + unit(1), 4 * unit(0)])  # cosines to src: 1/sqrt(2) and 1
    assert manifold_loss(src, dst, unit(2), unit(2)).item() == pytest.approx(
        ((1 - 1 / math.sqrt(2)) + 0) / 2)
    assert manifold_loss(src, dst, unit(2), unit(3)).item() == pytest.approx((1 / math.sqrt(2) + 1) / 2)


def test_indomain_loss_on_constructed_embeddings():
    src = torch.stack([unit(0), unit(1), unit(0) + unit(1)])  # pair cosines (1,0), (2,0), (2,1): 0, r, r
    dst = torch.stack([unit(0), 2 * unit(0), 3 * unit(2)])  # the same pairs: 1, 0, 0
    r = 1 / math.sqrt(2)
    expected = ((0 - 1) ** 2 + (r - 0) ** 2 + (r - 0) ** 2) / 3
    assert indomain_loss(src, dst).item() == pytest.approx(expected)
    assert indomain_loss(src, 5 * src).item() == pytest.approx(0.0, abs=1e-7)  # angles kept: no loss
    with pytest.raises(ValueError, match="at least 2 samples"):
        indomain_loss(src[:1], dst[:1])


def test_tt_direction_loss_on_constructed_embeddings():
    dst = torch.stack([unit(0), unit(1), 2 * unit(2)])
    texts = torch.stack([unit(0), unit(1), unit(3)])
    # (1,0): e1-e0 vs e1-e0 -> cos 1; (2,0): e2-e0 vs e3-e0 -> cos 1/2; (2,1): likewise 1/2.
    assert tt_direction_loss(dst, texts).item() == pytest.approx((0 + 0.5 + 0.5) / 3)
    assert tt_direction_loss(dst[:2], -texts[:2]).item() == pytest.approx(2.0)
    # One target for every sample: zero text differences count as cosine 0, a constant 1 without gradient.
    same = unit(3).expand(3, 4)
    dst = dst.clone().requires_grad_()
    loss = tt_direction_loss(dst, same)
    loss.backward()
    assert loss.item() == pytest.approx(1.0) and torch.count_nonzero(dst.grad) == 0


def test_tt_direction_loss_averages_template_differences():
    # Two templates per sample: the pair's text difference is the mean of the per-template differences.
    texts = torch.stack([torch.stack([unit(0), unit(1)]), torch.stack([unit(2), 3 * unit(3)])])  # [N=2, T=2, D]
    towards = torch.stack([unit(0) + unit(1), unit(2) + unit(3)])
    assert tt_direction_loss(towards, texts).item() == pytest.approx(0.0, abs=1e-6)
    assert tt_direction_loss(towards.flip(0), texts).item() == pytest.approx(2.0)


def test_indomain_term_of_the_guidance_matches_hand_computation():
    model = shared()
    src, dst = images(3, 1), images(3, 2)
    guidance = ClipGuidance([(model, 1.0)], source="photo", target="sketch", lambda_indomain=0.25)
    got = guidance.loss(dst, guidance.embed_source(src))
    src_emb, dst_emb = model.encode_images(src), model.encode_images(dst)
    expected = (directional_loss(src_emb, dst_emb, text_direction(model, "photo", "sketch"))
                + 0.25 * indomain_loss(src_emb, dst_emb))
    assert got.item() == pytest.approx(expected.item(), abs=1e-6)
    alone = ClipGuidance([(model, 1.0)], source="photo", target="sketch", lambda_direction=0, lambda_indomain=1)
    assert alone.loss(dst, alone.embed_source(src)).item() == pytest.approx(
        indomain_loss(src_emb, dst_emb).item(), abs=1e-6)


def test_part_prompts_are_one_generic_list():
    assert len(PART_PROMPTS) >= 8 and len(set(PART_PROMPTS)) == len(PART_PROMPTS)
    assert all(p.count("{}") == 1 for p in PART_PROMPTS)


def test_part_weighted_loss_matches_a_step_by_step_computation():
    src = torch.stack([unit(0), 2 * unit(1)])
    dst = torch.stack([unit(0) + unit(2), unit(1) + 3 * unit(3)])
    parts = torch.stack([unit(2), 2 * unit(3), unit(2) + unit(3)])  # P = 3, not normalised
    got = part_weighted_loss(src, dst, parts)
    # By hand: image directions dI_n, cosines c_np to each unit part direction, softmax over p of c_n,
    # then the mean over all n, p of weight * (1 - c).
    total = 0.0
    for n in range(2):
        d = dst[n] / dst[n].norm() - src[n] / src[n].norm()
        d = d / d.norm()
        cosines = [float(d @ (q / q.norm())) for q in parts]
        exps = [math.exp(c) for c in cosines]
        total += sum(e / sum(exps) * (1 - c) for e, c in zip(exps, cosines))
    assert got.item() == pytest.approx(total / (2 * 3), abs=1e-6)


def test_part_weighted_loss_of_a_change_along_one_part():
    # A change exactly along part 0 and orthogonal to the other P-1: weights e/(e + P-1) and 1/(e + P-1).
    parts = torch.stack([unit(1), unit(2), unit(3)])
    src, dst = (3 * (unit(0) - unit(1)))[None], (unit(0) + unit(1))[None]  # dI = e1
    expected = (math.e * 0 + 2 * 1 * 1) / (math.e + 2) / 3
    assert part_weighted_loss(src, dst, parts).item() == pytest.approx(expected, abs=1e-5)
    # About 1/P of the directional loss of the same change against the orthogonal parts (each 1).
    assert part_weighted_loss(src, dst, parts[1:]).item() == pytest.approx(1 / 2 * 1, abs=1e-5)


def test_part_weighted_loss_gradient_flows_through_the_weights():
    parts = torch.stack([unit(1), unit(2)])
    dst = (unit(0) + unit(1) + 0.5 * unit(2)).requires_grad_()
    part_weighted_loss(unit(0)[None], dst[None], parts).backward()
    # With detached weights the gradient would differ: compare with that variant computed by hand.
    detached = dst.detach().clone().requires_grad_()
    d = F.normalize(F.normalize(detached, dim=-1) - unit(0), dim=-1)
    c = d @ parts.T
    ((1 - c) * c.detach().softmax(-1)).mean().backward()
    assert not torch.allclose(dst.grad, detached.grad, atol=1e-4)


def test_part_directions_are_text_directions_of_the_filled_prompts():
    model = tiny()
    prompts = ["the {} eye.", "a {} in detail"]
    got = part_directions(model, "photo", "sketch", prompts)
    expected = torch.stack([text_direction(model, "the photo eye.", "the sketch eye."),
                            text_direction(model, "a photo in detail", "a sketch in detail")])
    assert got.shape == (2, 32) and torch.allclose(got, expected, atol=1e-6)
    hand = hand_template_embeddings(model, "the sketch eye.") - hand_template_embeddings(model, "the photo eye.")
    assert torch.allclose(got[0], F.normalize(hand.mean(0), dim=0), atol=1e-6)


def test_patch_loss_matches_hand_cropping_and_weighting():
    model = shared()
    src, dst = images(2, 1), images(2, 2)
    prompts = ["the {} eye.", "a {} in detail", "the {} texture"]
    parts = part_directions(model, "photo", "sketch", prompts)
    got = patch_directional_loss(model, src, dst, parts, 2, 40, torch.Generator().manual_seed(7))
    rng = torch.Generator().manual_seed(7)
    tops, lefts = torch.randint(0, 25, (2, 2), generator=rng), torch.randint(0, 25, (2, 2), generator=rng)
    places = [(i, t, l) for i in range(2) for t, l in zip(tops[i], lefts[i])]
    src_crops = torch.stack([src[i, :, t:t + 40, l:l + 40] for i, t, l in places])
    dst_crops = torch.stack([dst[i, :, t:t + 40, l:l + 40] for i, t, l in places])
    src_emb = F.normalize(model.encode_images(src_crops), dim=-1)
    dst_emb = F.normalize(model.encode_images(dst_crops), dim=-1)
    image_dirs = F.normalize(dst_emb - src_emb, dim=-1)  # [4 crops, D]
    cosines = image_dirs @ parts.T  # [4, 3]
    weights = torch.exp(cosines) / torch.exp(cosines).sum(dim=1, keepdim=True)
    expected = (weights * (1 - cosines)).sum() / (4 * 3)
    assert got.item() == pytest.approx(expected.item(), abs=1e-6)
    # A whole-image crop is the part-weighted loss of the whole images.
    whole = patch_directional_loss(model, src, dst, parts, 3, 64, None)
    assert whole.item() == pytest.approx(
        part_weighted_loss(model.encode_images(src), model.encode_images(dst), parts).item(), abs=1e-6)


def test_patch_loss_cuts_the_same_places_from_both_images():
    model = shared()
    src = images(2, 1)
    parts = part_directions(model, "photo", "sketch", ["the {} eye.", "a {} in detail"])
    # Same images and same crop places -> every image direction is zero -> cosines 0, equal weights 1/P:
    # the loss is exactly 1/P.
    loss = patch_directional_loss(model, src, src.clone(), parts, 4, 24, torch.Generator().manual_seed(0))
    assert loss.item() == pytest.approx(1 / 2)
    with pytest.raises(UserError, match="patch_size: 65"):
        patch_directional_loss(model, src, src, parts, 1, 65, None)


def test_guidance_patch_term_uses_the_part_prompts_it_is_given():
    model = shared()
    src, dst = images(2, 1), images(2, 2)
    prompts = ["the {} eye.", "a {} in detail"]

    def patch_only(**kwargs):
        guidance = ClipGuidance([(model, 1.0)], source="photo", target="sketch", lambda_direction=0,
                                lambda_patch=0.5, patch_size=32, seed=3, **kwargs)
        return guidance.loss(dst, guidance.embed_source(src), img_src=src).item()

    expected = 0.5 * patch_directional_loss(model, src, dst, part_directions(model, "photo", "sketch", prompts),
                                            1, 32, torch.Generator().manual_seed(3)).item()
    assert patch_only(part_prompts=prompts) == pytest.approx(expected, abs=1e-6)
    default = 0.5 * patch_directional_loss(model, src, dst, part_directions(model, "photo", "sketch"),
                                           1, 32, torch.Generator().manual_seed(3)).item()
    assert patch_only() == pytest.approx(default, abs=1e-6) and default != pytest.approx(expected)
    # The scale of the reference's: about 1/P of a cosine distance, far below the plain directional loss.
    assert default <= 0.5 * 2 / len(PART_PROMPTS)


def save_png(path, array):
    Image.fromarray(array.astype(np.uint8)).save(path)


def test_image_direction_target_matches_hand_computation(tmp_path):
    model = shared()
    rng = np.random.default_rng(0)
    style = [rng.integers(0, 256, (40, 56, 3)), rng.integers(0, 256, (48, 48, 3))]
    save_png(tmp_path / "b.png", style[1])
    save_png(tmp_path / "a.PNG", style[0])
    (tmp_path / "notes.txt").write_text("not an image")
    generated = images(3, 5)
    got = image_direction_target(model, tmp_path, generated)

    with torch.no_grad():
        style_emb = torch.cat([F.normalize(model.encode_images(
            torch.from_numpy(a).float().permute(2, 0, 1)[None] / 127.5 - 1), dim=-1) for a in style])
        gen_emb = F.normalize(model.encode_images(generated), dim=-1)
    expected = F.normalize(style_emb.mean(0) - gen_emb.mean(0), dim=0)
    assert got.shape == (32,) and torch.allclose(got, expected, atol=1e-6)


def test_image_direction_target_folder_errors(tmp_path):
    model = shared()
    with pytest.raises(UserError, match="is not a folder"):
        image_direction_target(model, tmp_path / "missing", images(1, 0))
    with pytest.raises(UserError, match="holds no images"):
        image_direction_target(model, tmp_path, images(1, 0))
    (tmp_path / "broken.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(UserError, match="broken.jpg"):
        image_direction_target(model, tmp_path, images(1, 0))


def test_image_direction_target_reads_every_format_validate_accepts(tmp_path):
    # validate accepts a folder of .webp/.bmp images; the loss must read them too (it once read only png/jpg).
    model = shared()
    rng = np.random.default_rng(1)
    Image.fromarray(rng.integers(0, 256, (32, 32, 3)).astype(np.uint8)).save(tmp_path / "a.webp", lossless=True)
    Image.fromarray(rng.integers(0, 256, (32, 32, 3)).astype(np.uint8)).save(tmp_path / "b.bmp")
    direction = image_direction_target(model, tmp_path, images(2, 0))
    assert direction.shape == (32,) and torch.isfinite(direction).all()


LAMBDAS = {"lambda_direction": 1.0, "lambda_global": 0.5, "lambda_manifold": 0.25}


def test_single_model_guidance_matches_hand_computation():
    model = shared()
    src, dst = images(2, 1), images(2, 2)
    guidance = ClipGuidance([(model, 1.0)], source="photo", target="sketch", **LAMBDAS)
    got = guidance.loss(dst, guidance.embed_source(src))

    src_emb, dst_emb = model.encode_images(src), model.encode_images(dst)
    with torch.no_grad():
        global_text = model.model.encode_text(clip.tokenize(["a sketch"]))[0]
    expected = (directional_loss(src_emb, dst_emb, text_direction(model, "photo", "sketch"))
                + 0.5 * global_loss(dst_emb, global_text, model.model.logit_scale)
                + 0.25 * manifold_loss(src_emb, dst_emb, template_text_embedding(model, "photo"),
                                       template_text_embedding(model, "sketch")))
    assert got.item() == pytest.approx(expected.item(), abs=1e-6)


def test_ensemble_is_the_weighted_sum_of_single_model_losses():
    models = [shared(0), shared(1)]
    src, dst = images(2, 1), images(2, 2)
    members = [(models[0], 0.3), (models[1], 1.7)]
    ensemble = ClipGuidance(members, source="photo", target="sketch", **LAMBDAS)
    got = ensemble.loss(dst, ensemble.embed_source(src))
    singles = []
    for model in models:
        single = ClipGuidance([(model, 1.0)], source="photo", target="sketch", **LAMBDAS)
        singles.append(single.loss(dst, single.embed_source(src)).item())
    assert got.item() == pytest.approx(0.3 * singles[0] + 1.7 * singles[1], abs=1e-6)
    assert singles[0] != pytest.approx(singles[1])

    text_loss = ensemble.global_text_loss(dst)
    expected = 0.0
    for model, weight in zip(models, (0.3, 1.7)):
        expected += weight * reference_global_loss(model, dst, "sketch").item()
    assert text_loss.item() == pytest.approx(expected, abs=1e-6)


def test_loss_is_differentiable_wrt_adapted_images():
    guidance = ClipGuidance([(shared(0), 1.0), (shared(1), 0.5)], source="photo", target="sketch",
                            lambda_patch=0.5, **LAMBDAS)
    src = images(2, 1)
    dst = images(2, 2).requires_grad_()
    loss = guidance.loss(dst, guidance.embed_source(src), img_src=src)
    assert loss.ndim == 0
    loss.backward()
    assert torch.isfinite(dst.grad).all() and dst.grad.abs().sum() > 0
    layer_src = images(2, 3).requires_grad_()
    guidance.global_text_loss(layer_src).backward()
    assert torch.isfinite(layer_src.grad).all() and layer_src.grad.abs().sum() > 0


def test_identical_images_still_give_a_finite_direction_loss():
    guidance = ClipGuidance([(shared(), 1.0)], source="photo", target="sketch")
    src = images(2, 1)
    dst = src.clone().requires_grad_()
    loss = guidance.loss(dst, guidance.embed_source(src))
    loss.backward()
    assert torch.isfinite(loss) and loss.item() != pytest.approx(1.0)
    assert torch.isfinite(dst.grad).all()


def test_embed_source_has_no_grad():
    guidance = ClipGuidance([(shared(0), 1.0), (shared(1), 1.0)], source="photo", target="sketch")
    embs = guidance.embed_source(images(2, 1).requires_grad_())
    assert len(embs) == 2 and all(e.shape == (2, 32) and not e.requires_grad for e in embs)


def test_zero_weight_terms_are_not_computed():
    model = tiny()
    guidance = ClipGuidance([(model, 1.0)], source="photo", target="sketch")
    guidance.loss(images(2, 2), guidance.embed_source(images(2, 1)))  # no patch loss: img_src not needed
    assert ("templates", "sketch") in model.cache  # the direction was computed...
    assert ("raw", "a sketch") not in model.cache  # ...the global loss's text was not


def write_style_images(folder, seed=0):
    rng = np.random.default_rng(seed)
    for name in ("one.png", "two.jpg"):
        Image.fromarray(rng.integers(0, 256, (40, 40, 3)).astype(np.uint8)).save(folder / name)


def test_image_target_replaces_the_text_direction(tmp_path):
    write_style_images(tmp_path)
    model, outsider = shared(0), shared(1)
    samples = images(4, 9)
    guidance = ClipGuidance([(model, 1.0)], source="photo", target=None)
    with pytest.raises(UserError, match="^target: "):
        guidance.eval_direction(model)
    guidance.use_image_target(str(tmp_path), samples)
    direction = image_direction_target(model, tmp_path, samples)
    src, dst = images(2, 1), images(2, 2)
    expected = directional_loss(model.encode_images(src), model.encode_images(dst), direction)
    assert guidance.loss(dst, guidance.embed_source(src)).item() == pytest.approx(expected.item(), abs=1e-6)
    # Evaluation with a model outside the ensemble measures the same image-guided direction.
    expected_outsider = image_direction_target(outsider, tmp_path, samples)
    assert torch.allclose(guidance.eval_direction(outsider), expected_outsider)
    with pytest.raises(UserError, match="^target: "):
        guidance.global_text_loss(dst)


def test_eval_direction_is_the_text_direction_of_any_model():
    guidance = ClipGuidance([(shared(0), 1.0)], source="photo", target="sketch")
    assert torch.equal(guidance.eval_direction(shared(1)), text_direction(shared(1), "photo", "sketch"))


@pytest.mark.parametrize("models, kwargs, match", [
    ("none", {}, "no CLIP model"),
    ("zero_weight", {}, "weight must be"),
    ("ok", {"lambda_global": -1.0}, "lambda_global: -1.0"),
    ("ok", {"lambda_direction": 0.0}, "all are 0"),
    ("ok", {"n_patches": 0}, "n_patches: 0"),
])
def test_guidance_rejects_bad_settings(models, kwargs, match):
    model = shared()
    members = {"none": [], "zero_weight": [(model, 0.0)], "ok": [(model, 1.0)]}[models]
    with pytest.raises(UserError, match=match):
        ClipGuidance(members, source="photo", target="sketch", **kwargs)


def longest_accepted_prompt():
    """The longest 'cat cat ...' that check_prompt accepts (it fits every prompt template)."""
    words = 1
    while True:
        try:
            check_prompt("cat " * (words + 1), "target")
        except UserError:
            return "cat " * words
        words += 1


def test_patch_loss_refuses_a_text_that_only_overflows_inside_a_part_prompt():
    model = shared()
    target = longest_accepted_prompt()
    ClipGuidance([(model, 1.0)], source="photo", target=target)  # fine without the patch loss
    with pytest.raises(UserError, match=r"^target: 'cat cat .* too long for the patch loss .* part prompt"):
        ClipGuidance([(model, 1.0)], source="photo", target=target, lambda_patch=1.0)
    with pytest.raises(UserError, match=r"^source: .*too long for the patch loss"):
        ClipGuidance([(model, 1.0)], source=target, target="sketch", lambda_patch=1.0)
    # A prompt that fits: the check lets it through and its part directions can be computed.
    short = ClipGuidance([(model, 1.0)], source="photo", target="cat " * 20, lambda_patch=1.0,
                         part_prompts=["the {} eye."])
    assert part_directions(model, "photo", short.target, short.part_prompts).shape == (1, 32)


def test_guidance_requires_the_texts_its_losses_use():
    model = shared()
    with pytest.raises(UserError, match="^target: .*global"):
        ClipGuidance([(model, 1.0)], source="photo", target=None, lambda_global=1.0)
    with pytest.raises(UserError, match="^source: .*manifold"):
        ClipGuidance([(model, 1.0)], source=None, target="sketch", lambda_manifold=1.0)
    with pytest.raises(UserError, match="^target: None: .*patch loss"):  # an image-guided domain
        ClipGuidance([(model, 1.0)], source="photo", target=None, lambda_patch=1.0)
    with pytest.raises(UserError, match="^source: '  ': .*patch loss"):
        ClipGuidance([(model, 1.0)], source="  ", target="sketch", lambda_patch=1.0)
    no_target = ClipGuidance([(model, 1.0)], source="photo", target=None)
    with pytest.raises(UserError, match="^target: .*target images"):
        no_target.loss(images(1, 1), no_target.embed_source(images(1, 2)))
