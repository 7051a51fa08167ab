"""ScheduleFree+ in plain JAX + optax: a small byte-level MLP language model on the lab's built-in text.

    pip install -e ".[jax,train]" && python scripts/jax_example.py

The model reads 8 bytes and predicts the next one (embeddings 256x24, one hidden layer of 256, 122k
parameters). It trains with ``sfplus.jax.schedule_free_plus()`` (the library's defaults, no learning rate),
decaying only the dense layers' weights (w1, w2), and reports the validation loss at x (``eval_params``,
the model to ship) and at y (the training parameters). docs/jax.md shows the printed result.
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

import sfplus.jax
from sfplus_lab.data import load_corpus

CONTEXT, EMBED, HIDDEN, VOCAB = 8, 24, 256, 256


def init_params(key: jax.Array) -> dict[str, jax.Array]:
    k1, k2, k3 = jax.random.split(key, 3)
    return {
        "embed": jax.random.normal(k1, (VOCAB, EMBED)) * 0.1,
        "w1": jax.random.normal(k2, (CONTEXT * EMBED, HIDDEN)) / np.sqrt(CONTEXT * EMBED),
        "b1": jnp.zeros(HIDDEN),
        "w2": jax.random.normal(k3, (HIDDEN, VOCAB)) / np.sqrt(HIDDEN),
        "b2": jnp.zeros(VOCAB),
    }


def loss_fn(params: dict[str, jax.Array], tokens: jax.Array) -> jax.Array:
    """Mean next-byte cross-entropy over a batch of windows of CONTEXT + 1 tokens."""
    context, target = tokens[:, :CONTEXT], tokens[:, CONTEXT]
    h = params["embed"][context].reshape(tokens.shape[0], -1)
    h = jax.nn.gelu(h @ params["w1"] + params["b1"])
    logits = h @ params["w2"] + params["b2"]
    return optax.softmax_cross_entropy_with_integer_labels(logits, target).mean()


def windows(tokens: np.ndarray, starts: np.ndarray) -> jax.Array:
    return jnp.asarray(tokens[starts[:, None] + np.arange(CONTEXT + 1)], dtype=jnp.int32)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    corpus = load_corpus(None)  # the built-in public-domain text, byte tokens
    train, val = corpus.train, np.concatenate(list(corpus.val.values()))
    rng = np.random.default_rng(args.seed)
    val_batch = windows(val, rng.choice(len(val) - CONTEXT - 1, size=4096, replace=False))

    params = init_params(jax.random.key(args.seed))
    opt = sfplus.jax.schedule_free_plus(weight_decay_mask=lambda p: {k: k.startswith("w") for k in p})
    state = opt.init(params)
    n_params = sum(p.size for p in jax.tree.leaves(params))
    print(f"{n_params:,} parameters, {len(train):,} training bytes, {args.steps} steps of {args.batch} windows")

    @jax.jit
    def train_step(params, state, batch):
        loss, grads = jax.value_and_grad(loss_fn)(params, batch)
        updates, state = opt.update(grads, state, params, value=loss)  # the loss goes in as value=
        return optax.apply_updates(params, updates), state, loss

    @jax.jit
    def evaluate(params, state):
        return loss_fn(sfplus.jax.eval_params(state, params), val_batch), loss_fn(params, val_batch)

    print(f"step {0:5d}  val loss at x {float(evaluate(params, state)[0]):.4f}")
    start = time.perf_counter()
    for step in range(1, args.steps + 1):
        batch = windows(train, rng.integers(0, len(train) - CONTEXT - 1, size=args.batch))
        params, state, loss = train_step(params, state, batch)
        if step % (args.steps // 6) == 0 or step == args.steps:
            at_x, at_y = (float(v) for v in evaluate(params, state))
            print(
                f"step {step:5d}  train {float(loss):.4f}  val at x {at_x:.4f}  val at y {at_y:.4f}  "
                f"alpha {float(state.stats.alpha):.4f}"
            )
    print(f"{time.perf_counter() - start:.1f} s for {args.steps} steps (including compilation)")


if __name__ == "__main__":
    main()
