"""The feed-forward network: a stack of ``Dense`` layers and a loss.

All parameters live in one flat vector ``params_flat`` (and the gradients
likewise in ``grads_flat``); each layer's ``params["W"]`` / ``params["b"]``
are views into it. The layout is::

    [W_1, ..., W_L, W_0, b_0, b_1, ..., b_L]

so that the optimizer updates the whole network in a handful of vectorized
calls, L2 and weight decay reach every weight as the prefix
``params_flat[:n_weights]``, and ``W_0`` with ``b_0`` below it is one
``(n_in + 1, n_out)`` matrix: the training pass multiplies the batch, with a
column of ones appended, by that block, and the first layer's bias costs
no extra NumPy call forward or backward. Checkpoints hold the parameters in
the plain order ``[W_0, ..., W_L, b_0, ..., b_L]`` (``canonical`` /
``set_canonical``).

When the loss is fused with the output activation (softmax + cross-entropy,
sigmoid + binary cross-entropy) the last layer is linear during training and
``forward`` returns logits; ``predict`` applies the output activation.
"""

from __future__ import annotations

import io
import json

import numpy as np

from .activations import get_activation
from .backprop import TrainingPass
from .data import CLASSIFICATION
from .layers import Dense
from .losses import Loss, get_loss

EVAL_CHUNK = 8192  # rows per forward pass when evaluating a whole set
EVAL_SIZES_KEPT = 4  # chunk sizes whose evaluation buffers are kept (train + val sets)


class Network:
    """A feed-forward network.

    Parameters
    ----------
    layers : list of Dense
        Hidden layers and the output layer, ``layers[i].n_out == layers[i+1].n_in``.
    loss : Loss
        The training objective; if ``loss.fused_activation`` is set the output
        layer must be linear and ``output_activation`` names the fused one.
    output_activation : str
        Applied by ``predict``.
    task : "classification" or "regression"
    """

    def __init__(
        self, layers: list[Dense], loss: Loss, output_activation: str, task: str = CLASSIFICATION
    ):
        self.layers = layers
        self.loss = loss
        self.output_activation = output_activation
        self.task = task
        self.fused = loss.fused_activation is not None
        self.dtype = layers[0].dtype
        self._bind_flat()
        self._passes: dict[int, TrainingPass] = {}
        self._eval: dict[int, list[np.ndarray]] = {}
        self._last_pass: TrainingPass | None = None

    # --- flat parameter storage ----------------------------------------------------

    def _bind_flat(self, params: np.ndarray | None = None, grads: np.ndarray | None = None) -> None:
        layers = self.layers
        self.n_weights = int(sum(layer.params["W"].size for layer in layers))
        total = self.n_weights + int(sum(layer.params["b"].size for layer in layers))
        self.params_flat = np.empty(total, self.dtype) if params is None else params
        self.grads_flat = np.zeros(total, self.dtype) if grads is None else grads
        order = [(layer, "W") for layer in layers[1:]] + [(layers[0], "W")]
        order += [(layer, "b") for layer in layers]
        offsets: dict[tuple[int, str], int] = {}
        offset = 0
        for layer, key in order:
            shape, size = layer.params[key].shape, layer.params[key].size
            view = self.params_flat[offset : offset + size].reshape(shape)
            view[...] = layer.params[key]
            layer.params[key] = view
            layer.grads[key] = self.grads_flat[offset : offset + size].reshape(shape)
            offsets[id(layer), key] = offset
            offset += size
        first = layers[0]
        start, shape = offsets[id(first), "W"], (first.n_in + 1, first.n_out)
        stop = start + first.params["W"].size + first.params["b"].size
        #: ``[W_0; b_0]`` of shape (n_in + 1, n_out), and its gradient
        self.first_block = self.params_flat[start:stop].reshape(shape)
        self.first_block_grad = self.grads_flat[start:stop].reshape(shape)
        # params_flat[self._canonical] is [W_0, ..., W_L, b_0, ..., b_L]
        self._canonical = np.concatenate(
            [
                np.arange(offsets[id(layer), key], offsets[id(layer), key] + layer.params[key].size)
                for key in ("W", "b")
                for layer in layers
            ]
        )

    def rebind(self, params: np.ndarray, grads: np.ndarray) -> None:
        """Move the parameters (their values) and the gradients onto the flat vectors
        ``params`` and ``grads`` (say, rows of a pack's stacked arrays, see ``packed``);
        the layers' views follow, and training passes built before are dropped."""
        if params.shape != (self.n_params,) or grads.shape != (self.n_params,):
            raise ValueError(f"rebind takes two vectors of {self.n_params} parameters")
        self._bind_flat(params, grads)
        self._passes.clear()
        self._last_pass = None

    def canonical(self, flat: np.ndarray) -> np.ndarray:
        """A copy of ``flat`` (laid out like ``params_flat``) in the order
        ``[W_0, ..., W_L, b_0, ..., b_L]``, as checkpoints store it."""
        return flat[self._canonical]

    def set_canonical(self, canonical: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """Write a vector in the order of ``canonical`` into ``out`` (default
        ``params_flat``), laid out like ``params_flat``; returns ``out``."""
        out = self.params_flat if out is None else out
        out[self._canonical] = canonical
        return out

    @property
    def n_params(self) -> int:
        return int(self.params_flat.size)

    @property
    def sizes(self) -> list[int]:
        """Widths ``[n_features, hidden..., n_outputs]``."""
        return [self.layers[0].n_in] + [layer.n_out for layer in self.layers]

    # --- forward and backward ------------------------------------------------------------

    def forward(
        self, X: np.ndarray, training: bool = False, rng: np.random.Generator | None = None
    ) -> np.ndarray:
        """Outputs ``O`` of shape ``(batch, n_out)`` for ``X`` of shape ``(batch, n_features)``.

        ``O`` are logits when the loss is fused with the output activation.
        With ``training=True`` the batch goes through the training pass of its
        size (dropout from ``rng``, intermediates kept for ``backward``) and
        ``O`` is that pass's buffer, overwritten by its next step.
        """
        if training:
            X = np.asarray(X)
            if X.dtype != self.dtype:  # the BLAS calls' out= buffers do not cast
                X = X.astype(self.dtype)
            p = self._last_pass = self.training_pass(X.shape[0])
            return p.forward(p.with_ones(X), rng)
        A = X
        for layer in self.layers:
            A = layer.forward(A)
        return A

    def backward(self, dO: np.ndarray) -> None:
        """Backpropagate ``dO = dL/dO`` (overwritten) through the last training
        forward and fill every layer's ``grads``."""
        if self._last_pass is None:
            raise RuntimeError("backward() needs a forward(training=True) first")
        dO = np.asarray(dO)
        if dO.dtype != self.dtype:
            dO = dO.astype(self.dtype)
        self._last_pass.backward(dO)

    def training_pass(self, n: int) -> TrainingPass:
        """The training forward/backward for batches of ``n`` rows (built once per size).

        The pass binds the layers' parameter views and dropout rates as they
        are when it is built.
        """
        p = self._passes.get(n)
        if p is None:
            p = self._passes[n] = TrainingPass(self, n)
        return p

    def loss_and_grads(self, X: np.ndarray, Y: np.ndarray, l2: float = 0.0) -> float:
        """One training forward/backward without dropout randomness beyond ``rng=None``.

        Returns the data loss plus ``l2 / 2 * sum ||W||^2`` and leaves the
        gradient of that total in ``grads_flat``. (Used by the gradient checker.)
        """
        O = self.forward(X, training=True)
        dO = self._last_pass.dO  # type: ignore[union-attr]
        loss = float(self.loss.forward_backward(O, Y, dO))
        self.backward(dO)
        if l2:
            W = self.params_flat[: self.n_weights]
            self.grads_flat[: self.n_weights] += l2 * W
            loss += 0.5 * l2 * float(np.vdot(W, W))
        return loss

    # --- targets, predictions, evaluation ----------------------------------------------

    def encode_targets(self, y: np.ndarray) -> np.ndarray:
        """Targets ``Y`` shaped like the outputs: one-hot rows, 0/1 column, or values."""
        n_out = self.layers[-1].n_out
        if self.task == CLASSIFICATION:
            y = np.asarray(y, np.int64).reshape(-1)
            if n_out == 1:
                return y.astype(self.dtype)[:, None]
            Y = np.zeros((len(y), n_out), self.dtype)
            Y[np.arange(len(y)), y] = 1
            return Y
        y = np.asarray(y, self.dtype)
        return y[:, None] if y.ndim == 1 else y

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Final outputs (probabilities for classification) for ``X``, shape ``(n, n_out)``.

        One sample may be given as a vector of ``n_in`` numbers; its outputs
        then come as a vector of ``n_out``.
        """
        X, one = self.as_rows(X)
        if one:
            return self.predict(X)[0]
        out = []
        act = get_activation(self.output_activation) if self.fused else None
        for s in range(0, max(len(X), 1), EVAL_CHUNK):
            O = self.forward(X[s : s + EVAL_CHUNK])
            out.append(act.forward(O) if act is not None else O)
        return np.concatenate(out) if out else np.empty((0, self.layers[-1].n_out), self.dtype)

    def as_rows(self, X, dtype=None) -> tuple[np.ndarray, bool]:
        """``X`` as a 2-D array (of ``dtype``, default the network's), and whether
        it was one sample (1-D)."""
        X = np.asarray(X, dtype or self.dtype)
        one = X.ndim == 1
        if one:
            X = X[None, :]
        n_in = self.layers[0].n_in
        if X.ndim != 2 or X.shape[1] != n_in:
            raise ValueError(
                f"expected rows of {n_in} features (or one sample of {n_in}), "
                f"got shape {np.shape(X[0] if one else X)}"
            )
        return X, one

    def targets_like_outputs(self, Y, n: int) -> np.ndarray:
        """``Y`` for ``n`` rows shaped like the outputs ``(n, n_out)``: targets already
        so shaped pass through; class labels or flat targets are encoded."""
        Y = np.asarray(Y)
        n_out = self.layers[-1].n_out
        if Y.ndim == 1 or (Y.ndim == 2 and Y.shape[1] == 1 and n_out > 1):
            Y = self.encode_targets(Y)
        if Y.shape != (n, n_out):
            raise ValueError(
                f"targets must be shaped like the outputs ({n}, {n_out}), or be {n} class "
                f"labels / flat targets; got shape {Y.shape}"
            )
        return Y

    def predict_labels(self, O: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """Predicted classes (int64, shape ``(batch,)``) from outputs ``O`` of ``forward``."""
        if O.shape[1] == 1:
            threshold = 0.0 if self.fused else 0.5  # logit 0 is probability 0.5
            return (
                np.greater(O[:, 0], threshold, out=out, casting="unsafe")
                if out is not None
                else (O[:, 0] > threshold).astype(np.int64)
            )
        return O.argmax(axis=1, out=out)

    def correct(self, O: np.ndarray, labels: np.ndarray) -> int:
        """Number of rows of ``O`` whose predicted class equals ``labels``."""
        return int(np.count_nonzero(self.predict_labels(O) == labels))

    def evaluate(
        self,
        X: np.ndarray,
        Y: np.ndarray,
        labels: np.ndarray | None = None,
        active: list[np.ndarray | None] | None = None,
        *,
        ones_column: bool = False,
    ) -> tuple[float, float | None]:
        """Mean loss and accuracy (``labels`` given) over a whole set, in chunks.

        ``Y`` holds targets shaped like the outputs (read fastest F-ordered,
        like the outputs here), or class labels / flat targets (encoded
        here). With ``ones_column`` ``X`` has a column of ones appended, and
        the first layer's bias rides in its product, as in training. If ``active`` is
        given (one boolean array per layer, or None), each ReLU layer's entry
        is OR-ed with the units that fired (output > 0) on some row.

        The intermediate arrays are kept per chunk size, so evaluating the
        same sets every epoch allocates nothing after the first time.
        """
        X = np.asarray(X, self.dtype)
        n = len(X)
        if n == 0:
            return float("nan"), None
        Y = self.targets_like_outputs(Y, n)
        folded = ones_column
        if X.ndim != 2 or X.shape[1] != self.layers[0].n_in + folded:
            raise ValueError(
                f"expected inputs of {self.layers[0].n_in + folded} columns, got shape {X.shape}"
            )
        last = len(self.layers) - 1
        total, correct = 0.0, 0
        ones = np.ones(min(n, EVAL_CHUNK) if active is not None else 0, self.dtype)
        for s in range(0, n, EVAL_CHUNK):
            A = X[s : s + EVAL_CHUNK]
            buffers = self._eval_buffers(len(A))
            for i, layer in enumerate(self.layers):
                Z = buffers[i]
                np.dot(A, self.first_block if i == 0 and folded else layer.params["W"], Z)
                if not (i == 0 and folded):
                    Z += layer.params["b"]
                A = layer.activation.forward(Z, out=Z)
                if active is not None and active[i] is not None:
                    # ReLU outputs are >= 0: a unit fired on some row iff its
                    # column sums to more than 0 (one BLAS call; NaN: not fired)
                    active[i] |= np.dot(ones[: len(A)], A) > 0
            # The loss reads an F-ordered copy: its per-row reductions then run
            # along contiguous memory (for 10 classes 8x faster than on A).
            O = buffers[last + 1]
            np.copyto(O, A)
            total += self.loss.value(O, Y[s : s + EVAL_CHUNK]) * len(A)
            if labels is not None:
                correct += self.correct(A, labels[s : s + EVAL_CHUNK])
        return total / n, (correct / n if labels is not None else None)

    def _eval_buffers(self, n: int) -> list[np.ndarray]:
        """One output array per layer, and an F-ordered one for the last, for an
        evaluation chunk of ``n`` rows."""
        buffers = self._eval.get(n)
        if buffers is None:
            if len(self._eval) >= EVAL_SIZES_KEPT:
                del self._eval[next(iter(self._eval))]  # the oldest size
            buffers = [np.empty((n, layer.n_out), self.dtype) for layer in self.layers]
            buffers.append(np.empty((self.layers[-1].n_out, n), self.dtype).T)
            self._eval[n] = buffers
        return buffers

    # --- norms ------------------------------------------------------------------------------

    def weight_norms(self) -> list[float]:
        """Frobenius norm of each layer's ``W``."""
        return [float(np.sqrt(np.vdot(L.params["W"], L.params["W"]))) for L in self.layers]

    def grad_norms(self) -> list[float]:
        """Frobenius norm of each layer's current ``dL/dW``."""
        return [float(np.sqrt(np.vdot(L.grads["W"], L.grads["W"]))) for L in self.layers]

    # --- copies and serialization -----------------------------------------------------------

    def architecture(self) -> dict:
        return {
            "sizes": self.sizes,
            "activations": [layer.activation.name for layer in self.layers],
            "dropout": [layer.dropout for layer in self.layers],
            "output_activation": self.output_activation,
            "loss": self.loss.name,
            "task": self.task,
            "dtype": self.dtype.name,
        }

    def astype(self, dtype) -> Network:
        """A copy of the network with parameters in ``dtype``."""
        net = _from_architecture(self.architecture(), dtype)
        net.params_flat[...] = self.params_flat
        return net

    def copy(self) -> Network:
        return self.astype(self.dtype)

    def to_npz_bytes(self) -> bytes:
        """The weights as ``.npz`` bytes (``layer_i.W``, ``layer_i.b`` and an
        ``architecture`` JSON string); ``Network.from_npz_bytes`` reads them back."""
        arrays = {}
        for i, layer in enumerate(self.layers):
            arrays[f"layer_{i}.W"] = layer.params["W"]
            arrays[f"layer_{i}.b"] = layer.params["b"]
        arrays["architecture"] = np.array(json.dumps(self.architecture()))
        buf = io.BytesIO()
        np.savez(buf, **arrays)  # type: ignore[arg-type]  # numpy's stub mistypes **kwds
        return buf.getvalue()

    @classmethod
    def from_npz_bytes(cls, blob: bytes) -> Network:
        with np.load(io.BytesIO(blob), allow_pickle=False) as z:
            arch = json.loads(str(z["architecture"]))
            net = _from_architecture(arch, arch["dtype"])
            for i, layer in enumerate(net.layers):
                layer.params["W"][...] = z[f"layer_{i}.W"]
                layer.params["b"][...] = z[f"layer_{i}.b"]
        return net

    def __repr__(self) -> str:
        inner = ", ".join(repr(layer) for layer in self.layers)
        return f"Network([{inner}], loss={self.loss.name!r}, output={self.output_activation!r})"


def _from_architecture(arch: dict, dtype) -> Network:
    sizes, acts = arch["sizes"], arch["activations"]
    dropout = arch.get("dropout") or [0.0] * len(acts)
    layers = [Dense(sizes[i], sizes[i + 1], acts[i], dropout[i], dtype) for i in range(len(acts))]
    return Network(layers, get_loss(arch["loss"]), arch["output_activation"], arch["task"])
