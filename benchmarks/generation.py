"""Generation benchmark: our beam search on DeltaLM vs Hugging Face ``generate`` on a BART of the same size.

Usage::

    .venv/bin/python -m benchmarks.generation            # the recorded run (a few minutes on 2 CPU cores)
    .venv/bin/python -m benchmarks.generation --quick    # a few seconds: the checks on the tiny preset's widths
    .venv/bin/python -m benchmarks.generation --json out.json

Three parts, one run, random weights, fp32, CPU:

1. **Encoder equality**: DeltaLM's encoder weights copied into ``BartForConditionalGeneration``'s encoder
   (same post-LN layer, learned positions offset 2, embedding LayerNorm, no embedding scaling): hidden states
   must agree.
2. **Identical beam-1 output on identical weights**: BART's decoder layer (self-attn → cross-attn → FFN) is a
   DeltaLM block (self-attn → FFN-1 → cross-attn → FFN-2) whose FFN-1 outputs zero and whose first LayerNorm
   is the identity (unit weight, zero bias; the next LayerNorm then normalizes an already-normalized vector,
   an eps-level change). A BART with D decoder layers is copied into such a DeltaLM; our ``greedy_search``
   and HF ``generate(num_beams=1)`` must return the same tokens for every sentence.
3. **Throughput** (beam 5): a random DeltaLM (E encoder layers, D blocks) vs a random BART with E encoder
   layers and L decoder layers, L chosen so that the decoder's per-token matmul work matches: a DeltaLM block
   costs 6d² (self-attn q,k,v,out + cross-attn q,out; cross K/V are cached) + 4·d·ffn (two FFNs), a BART
   layer 6d² + 2·d·ffn; L = round(D · (6d² + 4·d·ffn) / (6d² + 2·d·ffn)) (22/14·D for ffn = 4d). Both
   decode exactly N tokens then EOS (min length = max length = N), so both run N+1 decoder steps on the
   same batch and the timing compares the same work.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from dataclasses import asdict, dataclass

import torch

from deltalm.generation import beam_search, greedy_search
from deltalm.model.config import DeltaLMConfig
from deltalm.model.model import DeltaLM

PAD, EOS = 1, 2


@dataclass
class Setting:
    vocab: int
    d_model: int
    heads: int
    ffn: int
    encoder_layers: int
    decoder_blocks: int
    batch: int
    beam_size: int = 5
    new_tokens: int = 24
    src_min: int = 8
    src_max: int = 32
    repeats: int = 3
    seed: int = 1234

    @classmethod
    def from_preset(cls, preset: str, **run) -> Setting:
        """The widths of a ``DeltaLMConfig`` preset (the one place they live), with this run's batch etc."""
        c = DeltaLMConfig.preset(preset)
        dims = dict(vocab=c.vocab_size, d_model=c.d_model, heads=c.heads, ffn=c.ffn)
        layers = dict(encoder_layers=c.encoder_layers, decoder_blocks=c.decoder_blocks)
        return cls(**{**dims, **layers, **run})


SETTINGS = {
    # the `small` model preset (the demo's): per-step work is small, so search and cache overhead decides
    "small": Setting.from_preset("small", batch=16),
    # wide: the 32k-row output projection and the FFNs dominate, the same matmuls on both sides
    "wide": Setting(
        vocab=32_000,
        d_model=512,
        heads=8,
        ffn=2048,
        encoder_layers=6,
        decoder_blocks=3,
        batch=8,
        new_tokens=16,
    ),
    # base: DeltaLM-base widths and the XLM-R vocabulary (250,104 rows); opt-in (--setting base), minutes
    "base": Setting.from_preset("base", batch=4, new_tokens=8, repeats=2),
}
DEFAULT_SETTINGS = ("small", "wide")

QUICK = Setting.from_preset(  # the tiny model preset's widths, a small vocabulary and batch
    "tiny", vocab=512, batch=3, beam_size=3, new_tokens=5, src_min=3, src_max=9, repeats=1
)


# ---------------------------------------------------------------------------- models
def deltalm_config(s: Setting) -> DeltaLMConfig:
    return DeltaLMConfig.preset(
        "small",  # every shape field is the setting's; the rest (514 positions, ...) is the preset's
        vocab_size=s.vocab,
        d_model=s.d_model,
        heads=s.heads,
        ffn=s.ffn,
        encoder_layers=s.encoder_layers,
        decoder_blocks=s.decoder_blocks,
        dropout=0.0,
    )


def matched_bart_layers(s: Setting) -> int:
    """BART decoder layers doing the same per-token matmul work as ``s.decoder_blocks`` DeltaLM blocks."""
    d, f = s.d_model, s.ffn
    return max(1, round(s.decoder_blocks * (6 * d * d + 4 * d * f) / (6 * d * d + 2 * d * f)))


def make_bart(config: DeltaLMConfig, decoder_layers: int, seed: int):
    from transformers import BartConfig, BartForConditionalGeneration

    torch.manual_seed(seed)
    bart_config = BartConfig(
        vocab_size=config.padded_vocab_size,
        d_model=config.d_model,
        encoder_layers=config.encoder_layers,
        decoder_layers=decoder_layers,
        encoder_attention_heads=config.heads,
        decoder_attention_heads=config.heads,
        encoder_ffn_dim=config.ffn,
        decoder_ffn_dim=config.ffn,
        activation_function="gelu",
        max_position_embeddings=config.max_positions - 2,  # BART adds its offset of 2 rows
        dropout=0.0,
        attention_dropout=0.0,
        activation_dropout=0.0,
        scale_embedding=False,
        pad_token_id=PAD,
        bos_token_id=0,
        eos_token_id=EOS,
        decoder_start_token_id=EOS,
        forced_eos_token_id=EOS,
    )
    return BartForConditionalGeneration(bart_config).eval()


def make_deltalm(config: DeltaLMConfig, seed: int) -> DeltaLM:
    torch.manual_seed(seed)
    return DeltaLM(config).eval()


def _attention_names(prefix_bart: str, prefix_ours: str) -> list[tuple[str, str]]:
    return [
        (f"{prefix_bart}.{p}.{w}", f"{prefix_ours}.{p}.{w}")
        for p in ("q_proj", "k_proj", "v_proj", "out_proj")
        for w in ("weight", "bias")
    ]


def _pairs(prefix_bart: str, prefix_ours: str, names: list[tuple[str, str]]) -> list[tuple[str, str]]:
    return [
        (f"{prefix_bart}.{b}.{w}", f"{prefix_ours}.{o}.{w}") for b, o in names for w in ("weight", "bias")
    ]


def encoder_pairs(encoder_layers: int) -> list[tuple[str, str]]:
    """(BART name, DeltaLM name) of every encoder-side tensor; both sides post-LN XLM-R/BART layers."""
    pairs = [
        ("model.shared.weight", "embedding.embed_tokens.weight"),
        ("model.encoder.embed_positions.weight", "embedding.embed_positions.weight"),
        ("model.encoder.layernorm_embedding.weight", "embedding.emb_layer_norm.weight"),
        ("model.encoder.layernorm_embedding.bias", "embedding.emb_layer_norm.bias"),
    ]
    for i in range(encoder_layers):
        b, o = f"model.encoder.layers.{i}", f"encoder.layers.{i}"
        pairs += _attention_names(f"{b}.self_attn", f"{o}.self_attn")
        pairs += _pairs(
            b,
            o,
            [
                ("self_attn_layer_norm", "self_attn_layer_norm"),
                ("fc1", "ffn.fc1"),
                ("fc2", "ffn.fc2"),
                ("final_layer_norm", "final_layer_norm"),
            ],
        )
    return pairs


def decoder_pairs(decoder_layers: int) -> list[tuple[str, str]]:
    """BART decoder layer j → DeltaLM block j (FFN-1 and the first LayerNorm are set apart, see the header)."""
    pairs = [
        ("model.decoder.embed_positions.weight", "embedding.embed_positions.weight"),
        ("model.decoder.layernorm_embedding.weight", "embedding.emb_layer_norm.weight"),
        ("model.decoder.layernorm_embedding.bias", "embedding.emb_layer_norm.bias"),
    ]
    for j in range(decoder_layers):
        b, o = f"model.decoder.layers.{j}", f"decoder.layers.{j}"
        pairs += _attention_names(f"{b}.self_attn", f"{o}.self_attn")
        pairs += _attention_names(f"{b}.encoder_attn", f"{o}.encoder_attn")
        pairs += _pairs(
            b,
            o,
            [
                ("self_attn_layer_norm", "ffn_layer_norm"),
                ("encoder_attn_layer_norm", "encoder_attn_layer_norm"),
                ("fc1", "ffn_2.fc1"),
                ("fc2", "ffn_2.fc2"),
                ("final_layer_norm", "final_layer_norm"),
            ],
        )
    return pairs


@torch.no_grad()
def copy_encoder_into_bart(ours: DeltaLM, bart) -> None:
    bart_state, our_state = bart.state_dict(), ours.state_dict()
    for b, o in encoder_pairs(ours.config.encoder_layers):
        bart_state[b].copy_(our_state[o])


@torch.no_grad()
def deltalm_twin_of_bart(bart, config: DeltaLMConfig) -> DeltaLM:
    """A DeltaLM computing what ``bart`` computes (decoder blocks = BART decoder layers)."""
    layers = bart.config.decoder_layers
    ours = DeltaLM(config.replace(decoder_blocks=layers)).eval()
    bart_state, our_state = bart.state_dict(), ours.state_dict()
    # DeltaLM shares positions and embedding LayerNorm between encoder and decoder: make BART's equal too
    for name in ("embed_positions.weight", "layernorm_embedding.weight", "layernorm_embedding.bias"):
        bart_state[f"model.decoder.{name}"].copy_(bart_state[f"model.encoder.{name}"])
    for b, o in encoder_pairs(config.encoder_layers) + decoder_pairs(layers):
        our_state[o].copy_(bart_state[b])
    for j in range(layers):
        block = ours.decoder.layers[j]
        block.self_attn_layer_norm.weight.fill_(1.0)
        block.self_attn_layer_norm.bias.zero_()
        block.ffn_1.fc2.weight.zero_()
        block.ffn_1.fc2.bias.zero_()
    if bool(bart.final_logits_bias.abs().max() > 0):
        raise RuntimeError("BART final_logits_bias is not zero: the twin has no output bias")
    return ours


# ---------------------------------------------------------------------------- inputs and runs
def make_sources(s: Setting) -> torch.Tensor:
    g = torch.Generator().manual_seed(s.seed)
    lengths = torch.randint(s.src_min, s.src_max + 1, (s.batch,), generator=g).tolist()
    width = max(lengths)
    src = torch.full((s.batch, width), PAD, dtype=torch.long)
    for i, n in enumerate(lengths):
        src[i, : n - 1] = torch.randint(4, s.vocab, (n - 1,), generator=g)
        src[i, n - 1] = EOS
    return src


def hf_generate(bart, src: torch.Tensor, *, beams: int, max_new: int, min_new: int) -> list[list[int]]:
    from transformers import GenerationConfig

    gen = GenerationConfig(
        num_beams=beams,
        do_sample=False,
        max_new_tokens=max_new + 1,  # + the EOS
        min_new_tokens=min_new,
        no_repeat_ngram_size=0,
        decoder_start_token_id=EOS,
        eos_token_id=EOS,
        forced_eos_token_id=EOS,
        pad_token_id=PAD,
        bos_token_id=0,
        **({"length_penalty": 1.0, "early_stopping": True} if beams > 1 else {}),
    )
    with torch.inference_mode():
        out = bart.generate(input_ids=src, attention_mask=src.ne(PAD).long(), generation_config=gen)
    result = []
    for row in out.tolist():
        tokens = row[1:]
        result.append(tokens[: tokens.index(EOS)] if EOS in tokens else tokens)
    return result


def ours_generate(
    model: DeltaLM, src: torch.Tensor, *, beams: int, max_new: int, min_new: int
) -> list[list[int]]:
    results = beam_search(
        model,
        src,
        beam_size=beams,
        max_len_a=0.0,
        max_len_b=max_new,
        min_len=min_new,
        length_penalty=1.0,
        stop_early=True,
    )
    return [hyps[0].tokens for hyps in results]


def timed_pair(ours, theirs, repeats: int) -> tuple[dict, dict, list[list[int]], list[list[int]]]:
    """Median wall and CPU seconds of two generators, run alternately so background load hits both alike."""
    out_ours, out_theirs = ours(), theirs()  # warm-up (allocator, kernels)
    samples: dict[str, dict[str, list[float]]] = {
        "ours": {"wall": [], "cpu": []},
        "hf": {"wall": [], "cpu": []},
    }
    for _ in range(repeats):
        for name, fn in (("ours", ours), ("hf", theirs)):
            wall, cpu = time.perf_counter(), time.process_time()
            out = fn()
            samples[name]["wall"].append(time.perf_counter() - wall)
            samples[name]["cpu"].append(time.process_time() - cpu)
            if name == "ours":
                out_ours = out
            else:
                out_theirs = out
    medians = {name: {k: statistics.median(v) for k, v in d.items()} for name, d in samples.items()}
    return medians["ours"], medians["hf"], out_ours, out_theirs


def run(s: Setting) -> dict:
    torch.manual_seed(s.seed)
    config = deltalm_config(s)
    src = make_sources(s)
    report: dict = {
        "setting": asdict(s),
        "machine": f"{platform.machine()}, {torch.get_num_threads()} torch threads",
        "torch": torch.__version__,
    }
    import transformers

    report["transformers"] = transformers.__version__

    # 1. encoder equality (DeltaLM weights in BART's encoder)
    ours = make_deltalm(config, s.seed)
    bart_same_depth = make_bart(config, s.decoder_blocks, s.seed + 1)
    copy_encoder_into_bart(ours, bart_same_depth)
    with torch.inference_mode():
        mine = ours.encode(src)
        theirs = bart_same_depth.model.encoder(
            input_ids=src, attention_mask=src.ne(PAD).long()
        ).last_hidden_state
    real = src.ne(PAD)
    report["encoder_max_abs_diff"] = float((mine - theirs)[real].abs().max())

    # 2. identical greedy output on identical weights (BART copied into an equivalent DeltaLM)
    twin = deltalm_twin_of_bart(bart_same_depth, config)
    hf_greedy = hf_generate(bart_same_depth, src, beams=1, max_new=s.new_tokens, min_new=1)
    our_greedy = [
        h.tokens for h in greedy_search(twin, src, max_len_a=0.0, max_len_b=s.new_tokens, min_len=1)
    ]
    report["greedy_identical"] = sum(a == b for a, b in zip(hf_greedy, our_greedy, strict=True))
    report["greedy_sentences"] = len(src)
    hf_beam = hf_generate(bart_same_depth, src, beams=s.beam_size, max_new=s.new_tokens, min_new=1)
    our_beam = ours_generate(twin, src, beams=s.beam_size, max_new=s.new_tokens, min_new=1)
    report["beam_best_identical"] = sum(a == b for a, b in zip(hf_beam, our_beam, strict=True))
    del twin, bart_same_depth

    # 3. throughput, beam s.beam_size, exactly s.new_tokens tokens + EOS per sentence on both sides
    layers = matched_bart_layers(s)
    bart = make_bart(config, layers, s.seed + 2)
    report["bart_decoder_layers"] = layers
    report["params"] = {
        "deltalm": ours.num_parameters(),
        "bart": sum(p.numel() for p in bart.parameters()),
    }
    n = s.new_tokens
    t_ours, t_hf, out_ours, out_hf = timed_pair(
        lambda: ours_generate(ours, src, beams=s.beam_size, max_new=n, min_new=n),
        lambda: hf_generate(bart, src, beams=s.beam_size, max_new=n, min_new=n),
        s.repeats,
    )
    for name, out in (("ours", out_ours), ("hf", out_hf)):
        lengths = {len(t) for t in out}
        if lengths != {n}:
            raise RuntimeError(f"{name} produced lengths {sorted(lengths)}, expected exactly {n} tokens")
    tokens = s.batch * (n + 1)  # generated tokens including the EOS
    for name, t in (("ours", t_ours), ("hf", t_hf)):
        report[name] = {
            "wall_s": t["wall"],
            "cpu_s": t["cpu"],
            "sentences_per_s": s.batch / t["wall"],
            "tokens_per_s": tokens / t["wall"],
            "sentences_per_cpu_s": s.batch / t["cpu"],
            "tokens_per_cpu_s": tokens / t["cpu"],
        }
    report["speedup_wall"] = t_hf["wall"] / t_ours["wall"]
    report["speedup_cpu"] = t_hf["cpu"] / t_ours["cpu"]
    return report


def format_report(r: dict) -> str:
    s = r["setting"]
    lines = [
        f"DeltaLM E={s['encoder_layers']} D={s['decoder_blocks']} d={s['d_model']} heads={s['heads']} "
        f"ffn={s['ffn']} vocab={s['vocab']} ({r['params']['deltalm']:,} params) vs BART "
        f"{s['encoder_layers']}+{r['bart_decoder_layers']} layers ({r['params']['bart']:,} params)",
        f"batch {s['batch']} sentences, source {s['src_min']}-{s['src_max']} tokens, beam {s['beam_size']}, "
        f"{s['new_tokens']} tokens + EOS each, median of {s['repeats']}; {r['machine']}, torch {r['torch']}, "
        f"transformers {r['transformers']}",
        f"encoder max |diff| vs BART: {r['encoder_max_abs_diff']:.2e}",
        f"greedy identical on identical weights: {r['greedy_identical']}/{r['greedy_sentences']}; "
        f"beam-{s['beam_size']} best identical: {r['beam_best_identical']}/{r['greedy_sentences']}",
        f"{'':6s} {'wall s':>8s} {'cpu s':>8s} {'sent/s':>8s} {'tok/s':>8s} {'sent/cpu-s':>10s} {'tok/cpu-s':>10s}",
    ]
    for name in ("ours", "hf"):
        m = r[name]
        lines.append(
            f"{name:6s} {m['wall_s']:8.3f} {m['cpu_s']:8.3f} {m['sentences_per_s']:8.2f} {m['tokens_per_s']:8.1f}"
            f" {m['sentences_per_cpu_s']:10.2f} {m['tokens_per_cpu_s']:10.1f}"
        )
    lines.append(f"speedup (HF / ours): wall {r['speedup_wall']:.2f}x, cpu {r['speedup_cpu']:.2f}x")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--quick", action="store_true", help="the tiny preset's widths, a small batch: the checks in seconds"
    )
    parser.add_argument(
        "--setting", choices=[*SETTINGS, "all"], default="all", help="model size to run (all: small and wide)"
    )
    parser.add_argument("--json", help="also write the reports as JSON to this path")
    parser.add_argument("--batch", type=int, help="sentences in the batch")
    parser.add_argument("--beam-size", type=int, help="beam size")
    parser.add_argument("--new-tokens", type=int, help="tokens generated per sentence (before EOS)")
    parser.add_argument("--repeats", type=int, help="timed repeats (median reported)")
    parser.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's)")
    args = parser.parse_args(argv)
    if args.quick:
        settings = {"quick": QUICK}
    elif args.setting == "all":
        settings = {name: SETTINGS[name] for name in DEFAULT_SETTINGS}
    else:
        settings = {args.setting: SETTINGS[args.setting]}
    for name in ("batch", "beam_size", "new_tokens", "repeats", "threads"):
        value = getattr(args, name)
        if value is not None and value < 1:
            print(f"error: --{name.replace('_', '-')} must be >= 1, got {value}", file=sys.stderr)
            return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    overrides = {
        n: getattr(args, n) for n in ("batch", "beam_size", "new_tokens", "repeats") if getattr(args, n)
    }
    reports = {}
    for label, setting in settings.items():
        reports[label] = run(Setting(**{**asdict(setting), **overrides}))
        print(f"== {label}\n{format_report(reports[label])}\n", flush=True)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump(reports, handle, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
