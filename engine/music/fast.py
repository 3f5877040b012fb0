"""The music networks' eval-mode arithmetic in numpy float32 on the CPU, for generation.

At batch size 1 every torch call costs microseconds of dispatch; a token here is a few
matrix-vector products. Each net makes a cursor per time step (`open`): the cursor gives
the logits of the step's next token (`logits`), reads the token chosen (`read`), and holds
the recurrent state to carry into the next step (`state`). States are tuples of arrays,
never changed in place, so the Stepper can snapshot them for free.
Both match their modules to float32 rounding (tests/music/test_generate.py); a mixture of
them samples from the mean of their probabilities (FastMixture, tests/music/test_mixture.py).
"""
from __future__ import annotations

import numpy as np
import torch


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (np.tanh(0.5 * x) + 1.0)  # no overflow warnings for large |x|


_GELU_A, _GELU_B = np.float32(-2 * 0.7978845608), np.float32(-2 * 0.7978845608 * 0.044715)


def _gelu(x: np.ndarray) -> np.ndarray:
    """torch's GELU with approximate="tanh", as x * sigmoid(2u) = x / (1 + exp(-2u)) with
    u = 0.79788456 (x + 0.044715 x^3): the same function in 3x fewer numpy calls' time (a
    decoder token calls it twice). The exponent is capped where the result is 0 anyway."""
    t = x * x
    t *= _GELU_B
    t += _GELU_A
    t *= x
    np.minimum(t, 80.0, out=t)
    np.exp(t, out=t)
    t += 1.0
    return np.divide(x, t, out=t)


class _Recurrence:
    """A multi-layer nn.LSTM/nn.GRU one step at a time, given layer 0's input gates."""

    def __init__(self, w: dict[str, np.ndarray], prefix: str, layers: int, hidden: int, lstm: bool):
        self.lstm, self.layers, self.hidden = lstm, layers, hidden
        self.w_ih0, self.b_ih0 = w[f"{prefix}weight_ih_l0"], w[f"{prefix}bias_ih_l0"]
        # Upper LSTM layers read [x, h] through one matrix: one product per layer and step.
        self.w_cat = [None] + [np.ascontiguousarray(np.hstack([w[f"{prefix}weight_ih_l{i}"], w[f"{prefix}weight_hh_l{i}"]]))
                               for i in range(1, layers)]
        self.w_ih = [None] + [w[f"{prefix}weight_ih_l{i}"] for i in range(1, layers)]
        self.b_ih = [None] + [w[f"{prefix}bias_ih_l{i}"] for i in range(1, layers)]
        self.w_hh = [w[f"{prefix}weight_hh_l{i}"] for i in range(layers)]
        self.b_hh = [w[f"{prefix}bias_hh_l{i}"] for i in range(layers)]
        self.b_cat = [None] + [self.b_ih[i] + self.b_hh[i] for i in range(1, layers)]

    def zero_state(self) -> tuple:
        zero = np.zeros(self.hidden, np.float32)
        return tuple((zero, zero) if self.lstm else zero for _ in range(self.layers))

    def step(self, gi: np.ndarray, state: tuple) -> tuple:
        """The state after one step; `gi`: layer 0's input gates, bias included."""
        new = []
        n = self.hidden
        x = None  # the input of layer i >= 1: layer i - 1's output
        for i in range(self.layers):
            if self.lstm:
                h, c = state[i]
                if i:
                    g = self.w_cat[i] @ np.concatenate([x, h]) + self.b_cat[i]
                else:
                    g = gi + self.w_hh[0] @ h + self.b_hh[0]
                s = _sigmoid(g)  # gates i, f, (g), o; the g slice is replaced by tanh below
                c = s[n:2 * n] * c + s[:n] * np.tanh(g[2 * n:3 * n])
                x = s[3 * n:] * np.tanh(c)
                new.append((x, c))
            else:
                h = state[i]
                if i:
                    gi = self.w_ih[i] @ x + self.b_ih[i]
                gh = self.w_hh[i] @ h + self.b_hh[i]
                rz = _sigmoid(gi[:2 * n] + gh[:2 * n])
                r, z = rz[:n], rz[n:]
                x = (1 - z) * np.tanh(gi[2 * n:] + r * gh[2 * n:]) + z * h
                new.append(x)
        return tuple(new)

    def top(self, state: tuple) -> np.ndarray:
        return state[-1][0] if self.lstm else state[-1]


def _weights(model: torch.nn.Module) -> dict[str, np.ndarray]:
    return {k: v.detach().float().cpu().numpy() for k, v in model.state_dict().items()}


class FastRNN:
    """The token MusicRNN: the first layer's input projection of each token embedding is
    precomputed into a table, and the conditioning is projected once per step."""

    def __init__(self, model: torch.nn.Module):
        w = _weights(model)
        cfg = model.config
        self.step_end = cfg.layout.step_end
        self.rec = _Recurrence(w, "rnn.", cfg.n_layers, cfg.d_hidden, cfg.cell == "lstm")
        self.token_in = w["embed.weight"] @ self.rec.w_ih0.T + self.rec.b_ih0  # vocab × gates
        self.bar = w.get("bar_embed.weight")
        self.prev_proj = w.get("prev_proj.weight")  # d_embed × n_keys
        self.d_embed = cfg.d_embed
        self.head_w, self.head_b = w["head.weight"], w["head.bias"]

    def zero_state(self) -> tuple:
        return self.rec.zero_state()

    def cond_input(self, pos: int, prev_keys: np.ndarray) -> np.ndarray:
        cond = np.zeros(self.d_embed, np.float32)
        if self.bar is not None:
            cond = cond + self.bar[pos % len(self.bar)]
        if self.prev_proj is not None:
            cond = cond + self.prev_proj @ prev_keys.astype(np.float32)
        return self.rec.w_ih0 @ cond

    def step(self, token: int, cond: np.ndarray, state: tuple) -> tuple:
        """The state after reading `token`; `cond` from cond_input for the token's step."""
        return self.rec.step(self.token_in[token] + cond, state)

    def logits(self, state: tuple) -> np.ndarray:
        return self.head_w @ self.rec.top(state) + self.head_b

    def open(self, state: tuple, pos: int, prev_keys: np.ndarray) -> "_TokenCursor":
        return _TokenCursor(self, state, self.cond_input(pos, prev_keys))


class _Cursor:
    def clone(self):
        """A copy to draw the step again from (copy.copy takes 40 us; this 1)."""
        twin = object.__new__(type(self))
        twin.__dict__.update(self.__dict__)
        return twin


class _TokenCursor(_Cursor):
    def __init__(self, net: FastRNN, state: tuple, cond: np.ndarray):
        self.net, self.cond = net, cond
        self.state = net.step(net.step_end, cond, state)  # the previous step's STEP_END, read now

    def logits(self) -> np.ndarray:
        return self.net.logits(self.state)

    def read(self, token: int) -> None:
        self.state = self.net.step(token, self.cond, self.state)


class FastFrame:
    """The frame MusicFrameRNN: one recurrence step per time step, then the decoder MLP per token."""

    def __init__(self, model: torch.nn.Module):
        w = _weights(model)
        cfg = model.config
        self.n_keys, self.bar_steps, self.step_end = cfg.n_keys, cfg.bar_steps, cfg.layout.step_end
        self.rec = _Recurrence(w, "rnn.", cfg.n_layers, cfg.d_hidden, cfg.cell == "lstm")
        # Inputs that are key sets are read as sums of rows (a step has a few keys, not 88).
        self.prev_gates = np.ascontiguousarray(self.rec.w_ih0[:, :cfg.n_keys].T)  # n_keys × gates
        self.w_bar = np.ascontiguousarray(self.rec.w_ih0[:, cfg.n_keys:].T)  # bar_steps × gates
        self.ctx_w, self.ctx_b = w["ctx_proj.weight"], w["ctx_proj.bias"]
        self.prev_dec = np.ascontiguousarray(w["prev_proj.weight"].T)  # n_keys × d
        self.set_cols = np.ascontiguousarray(w["set_proj.weight"].T)  # n_keys × d: a key's column, as a row
        self.last = w["last_embed.weight"]
        self.hidden = [(w[f"hidden.{i}.weight"], w[f"hidden.{i}.bias"]) for i in range(cfg.decoder_layers - 1)]
        self.head_w, self.head_b = w["head.weight"], w["head.bias"]

    def zero_state(self) -> tuple:
        return self.rec.zero_state()

    def open(self, state: tuple, pos: int, prev_keys: np.ndarray) -> "_FrameCursor":
        keys = np.flatnonzero(prev_keys)
        gi = self.prev_gates[keys].sum(axis=0) + self.rec.b_ih0
        if self.bar_steps:
            gi = gi + self.w_bar[pos % self.bar_steps]
        state = self.rec.step(gi, state)
        ctx = self.ctx_w @ self.rec.top(state) + self.ctx_b + self.prev_dec[keys].sum(axis=0)
        return _FrameCursor(self, state, ctx)

    def decode(self, x: np.ndarray) -> np.ndarray:
        x = _gelu(x)
        for w, b in self.hidden:
            x = _gelu(w @ x + b)
        return self.head_w @ x + self.head_b


class _FrameCursor(_Cursor):
    def __init__(self, net: FastFrame, state: tuple, ctx: np.ndarray):
        self.net, self.state = net, state
        self.base = ctx  # context plus the keys written so far
        self.last = net.step_end

    def logits(self) -> np.ndarray:
        return self.net.decode(self.base + self.net.last[self.last])

    def read(self, token: int) -> None:
        self.base = self.base + self.net.set_cols[token % self.net.n_keys]
        self.last = token


class FastMixture:
    """A mixture of nets (engine/music/mixture.py): every member reads the same tokens, and the
    "logits" of the next token are the log of the mean of the members' probabilities, each
    member's softmax taken over the tokens the spelling allows (as the mixture's NLL is scored).
    The state is the tuple of the members' states."""

    def __init__(self, nets: list, layout):
        self.nets, self.layout = nets, layout
        self.n_keys, self.holds = layout.n_keys, layout.holds
        self.log_n = np.float32(np.log(len(nets)))

    def zero_state(self) -> tuple:
        return tuple(net.zero_state() for net in self.nets)

    def open(self, state: tuple, pos: int, prev_keys: np.ndarray) -> "_MixtureCursor":
        spelt = np.ones(self.layout.vocab_size, bool)  # tokens the spelling allows: held tokens need a sounding key
        if self.holds:
            spelt[self.n_keys:2 * self.n_keys] = prev_keys
        return _MixtureCursor(self, [net.open(s, pos, prev_keys) for net, s in zip(self.nets, state)], spelt)


class _MixtureCursor(_Cursor):
    def __init__(self, net: FastMixture, cursors: list, spelt: np.ndarray):
        self.net, self.cursors, self.spelt = net, cursors, spelt

    @property
    def state(self) -> tuple:
        return tuple(c.state for c in self.cursors)

    def logits(self) -> np.ndarray:
        z = np.stack([c.logits() for c in self.cursors])[:, self.spelt]
        z -= z.max(axis=1, keepdims=True)
        z -= np.log(np.exp(z).sum(axis=1, keepdims=True))  # each member's log-probabilities
        top = z.max(axis=0)
        out = np.full(len(self.spelt), -np.inf, np.float32)
        out[self.spelt] = top + np.log(np.exp(z - top).sum(axis=0)) - self.net.log_n
        return out

    def read(self, token: int) -> None:
        for c in self.cursors:
            c.read(token)
        n = self.net.n_keys
        key = token % n
        self.spelt = self.spelt.copy()  # keys at or below the one written cannot follow it
        self.spelt[:key + 1] = False
        if self.net.holds:
            self.spelt[n:n + key + 1] = False

    def clone(self):
        twin = super().clone()
        twin.cursors = [c.clone() for c in self.cursors]
        return twin


def fast_net(model: torch.nn.Module) -> FastRNN | FastFrame | FastMixture:
    """The numpy twin of a token or frame music network, or of a mixture of them."""
    members = getattr(model, "members", None)
    if members is not None:
        return FastMixture([fast_net(m) for m in members], model.config.layout)
    return FastFrame(model) if model.config.arch == "frame" else FastRNN(model)
