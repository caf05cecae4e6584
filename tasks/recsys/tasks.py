"""Top-k recommendation from implicit feedback, with the NCF evaluation protocol.

* ``movielens``: MovieLens-100K from its original ``u.data``
  (``user<TAB>item<TAB>rating<TAB>timestamp``).
* ``ratings_csv``: a user's ratings CSV with a header (column names configurable).

The protocol of He et al., "Neural Collaborative Filtering" (WWW 2017), which most
ML-100K / ML-1M papers follow:

* every rating is an implicit positive interaction (``min_rating`` can raise the bar);
* leave-one-out by time: each user's latest interaction is the test item, the one
  before it the validation item, the rest are training positives (ties in time are
  broken by item id, so the split is deterministic);
* evaluation ranks the held-out item among 99 items the user never interacted with,
  sampled once per ``split_seed`` (the same candidates for every model and run seed);
  metrics HR@10 (hit ratio) and NDCG@10;
* training pairs are ``(user, item, 1)`` for positives and ``num_negatives`` sampled
  non-interacted items per positive with label 0, drawn afresh for every epoch as in
  NCF (the train split is a :class:`~dnas_core.training.EpochTensorDataset`: every
  training loop calls ``set_epoch`` and the negatives of epoch ``e`` come from a
  generator seeded by ``(run seed, e)``, so runs and resumed runs are reproducible;
  ``resample_negatives: false`` keeps the epoch-0 negatives throughout).

Inputs are a tuple ``(user index, item index)`` of int64 tensors; the model outputs one
logit per pair, trained with binary cross-entropy. A val / test split holds, per user,
one group of ``1 + num_eval_negatives`` consecutive rows with the positive first, so the
splits can also be used as training batches (DARTS architecture steps, ``include_val``).
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from pydantic import Field
from torch import nn
from torch.utils.data import Dataset, TensorDataset

from dnas_core import ComponentConfig, DataError, IOSpec, RunFailed, Task, TaskData
from dnas_core.seeding import derive_seed
from dnas_core.training import EpochTensorDataset
from dnas_tasks._common import resolve_path

TOP_K = 10


class Interactions:
    """Implicit interactions re-indexed to ``0..n-1`` with the leave-one-out split.

    ``role`` of each interaction: 0 train, 1 validation, 2 test.
    """

    def __init__(self, users: np.ndarray, items: np.ndarray, times: np.ndarray, source: str):
        if len(users) == 0:
            raise DataError(f"{source}: no interactions left to use")
        user_ids, u = np.unique(users, return_inverse=True)
        item_ids, i = np.unique(items, return_inverse=True)
        times = np.asarray(times, dtype=np.float64)
        # One interaction per (user, item): keep the latest.
        order = np.lexsort((-times, i, u))
        u, i, times = u[order], i[order], times[order]
        first = np.ones(len(u), dtype=bool)
        first[1:] = (u[1:] != u[:-1]) | (i[1:] != i[:-1])
        u, i, times = u[first], i[first], times[first]
        # Per user in time order (ties by item id); position counted from the end.
        order = np.lexsort((i, times, u))
        self.users, self.items, self.times = u[order], i[order], times[order]
        counts = np.bincount(self.users, minlength=len(user_ids))
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        from_end = np.repeat(starts + counts, counts) - np.arange(len(self.users)) - 1
        n_user = counts[self.users]
        self.role = np.zeros(len(self.users), dtype=np.int64)
        self.role[(from_end == 0) & (n_user >= 2)] = 2
        self.role[(from_end == 1) & (n_user >= 3)] = 1
        self.user_ids, self.item_ids = user_ids, item_ids
        self.num_users, self.num_items = len(user_ids), len(item_ids)
        self.counts = counts
        self.source = source
        # Sorted keys of every positive (user, item) pair, for negative sampling.
        self.keys = np.unique(self.users * self.num_items + self.items)

    def sample_negatives(self, users: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """One item per entry of ``users`` that this user never interacted with."""
        items = rng.integers(0, self.num_items, size=len(users))
        bad = np.isin(users * self.num_items + items, self.keys)
        for _ in range(1000):
            if not bad.any():
                return items
            items[bad] = rng.integers(0, self.num_items, size=int(bad.sum()))
            bad[bad] = np.isin(users[bad] * self.num_items + items[bad], self.keys)
        raise DataError(f"{self.source}: some users have interacted with (nearly) every item; cannot sample negatives")

    def eval_groups(self, role: int, k: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Rows ``(user, item, label)``: per user with a held-out item of ``role``, the
        item then ``k`` distinct sampled non-interacted items. Users with fewer than
        ``k`` unseen items stay out of evaluation."""
        sel = np.flatnonzero(self.role == role)
        sel = sel[self.num_items - self.counts[self.users[sel]] >= k]
        us = self.users[sel]
        negs = np.empty((len(us), k), dtype=np.int64)
        todo = np.arange(len(us))
        # Vectorised rejection sampling: draw a few times k candidates per user, drop
        # interacted and repeated items, keep the first k (in draw order).
        for _ in range(20):
            if not len(todo):
                break
            cand = rng.integers(0, self.num_items, size=(len(todo), 3 * k + 10))
            valid = ~np.isin(us[todo, None] * self.num_items + cand, self.keys)
            order = np.argsort(cand, axis=1, kind="stable")
            srt = np.take_along_axis(cand, order, axis=1)
            dup_sorted = np.zeros_like(valid)
            dup_sorted[:, 1:] = srt[:, 1:] == srt[:, :-1]
            dup = np.empty_like(valid)
            np.put_along_axis(dup, order, dup_sorted, axis=1)
            valid &= ~dup
            done = valid.sum(axis=1) >= k
            first = np.argsort(~valid[done], axis=1, kind="stable")[:, :k]
            negs[todo[done]] = np.take_along_axis(cand[done], first, axis=1)
            todo = todo[~done]
        all_items = np.arange(self.num_items)
        for j in todo:  # users who saw most of the catalogue: sample from the complement
            seen = self.items[self.users == us[j]]
            negs[j] = rng.choice(np.setdiff1d(all_items, seen), k, replace=False)
        users = np.repeat(us, k + 1)
        items = np.concatenate([self.items[sel, None], negs], axis=1).reshape(-1)
        labels = np.tile(np.eye(1, k + 1, 0, dtype=np.float32)[0], len(us))
        return users, items, labels


# --------------------------------------------------------------------------------------
# Readers
# --------------------------------------------------------------------------------------

U_DATA_FORMAT = "MovieLens u.data: one rating a line, user<TAB>item<TAB>rating<TAB>timestamp (integers)"


def read_u_data(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(users, items, ratings, timestamps)`` of a MovieLens ``u.data`` file."""
    try:
        text = path.read_text(encoding="latin-1")
    except OSError as exc:
        raise DataError(f"movielens: cannot read {path}: {exc}; expected {U_DATA_FORMAT}") from None
    rows = []
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.split("\t")
        if len(parts) != 4:
            raise DataError(f"movielens: {path} line {n} has {len(parts)} tab-separated fields, not 4: {line[:60]!r}; "
                            f"expected {U_DATA_FORMAT}")
        try:
            rows.append([int(p) for p in parts])
        except ValueError:
            raise DataError(f"movielens: {path} line {n} holds a non-integer field: {line[:60]!r}; "
                            f"expected {U_DATA_FORMAT}") from None
    if not rows:
        raise DataError(f"movielens: {path} is empty; expected {U_DATA_FORMAT}")
    a = np.asarray(rows, dtype=np.int64)
    return a[:, 0], a[:, 1], a[:, 2].astype(np.float64), a[:, 3].astype(np.float64)


def read_ratings_csv(path: Path, user_col: str, item_col: str, time_col: str, rating_col: str | None,
                     delimiter: str | None) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray]:
    """``(users, items, ratings or None, timestamps)`` of a CSV with a header row."""
    cols = [user_col, item_col, time_col] + ([rating_col] if rating_col else [])
    expected = f"a CSV/TSV file with a header naming the columns {cols}"
    try:
        with path.open(newline="", encoding="utf-8") as fh:
            head = fh.read(8192)
            fh.seek(0)
            if delimiter is None:
                try:
                    delimiter = csv.Sniffer().sniff(head, delimiters=",;\t|").delimiter
                except csv.Error:
                    delimiter = ","
            reader = csv.DictReader(fh, delimiter=delimiter)
            missing = [c for c in cols if c not in (reader.fieldnames or [])]
            if missing:
                raise DataError(f"ratings_csv: {path} has no column(s) {missing} (header: {reader.fieldnames}); expected {expected}")
            users, items, times, ratings = [], [], [], []
            for n, row in enumerate(reader, start=2):
                try:
                    users.append(row[user_col])
                    items.append(row[item_col])
                    times.append(float(row[time_col]))
                    if rating_col:
                        ratings.append(float(row[rating_col]))
                except (TypeError, ValueError):
                    raise DataError(f"ratings_csv: {path} line {n}: {time_col!r}"
                                    + (f" and {rating_col!r} must be numbers" if rating_col else " must be a number")
                                    + f", got {row}") from None
    except UnicodeDecodeError:
        raise DataError(f"ratings_csv: {path} is not UTF-8 text; expected {expected}") from None
    if not users:
        raise DataError(f"ratings_csv: {path} has no data rows; expected {expected}")
    return (np.asarray(users), np.asarray(items), np.asarray(ratings) if rating_col else None,
            np.asarray(times, dtype=np.float64))


# --------------------------------------------------------------------------------------
# Model adapters
# --------------------------------------------------------------------------------------


class FieldEmbeddingStem(nn.Module):
    """(user, item) indices -> one embedding of ``channels`` per field, concatenated
    and projected to ``channels``: the generic (N, C) layout of the recsys modality.
    The recsys search space builds its own embeddings (their size is searched)."""

    def __init__(self, field_sizes: list[int], channels: int):
        super().__init__()
        self.embeddings = nn.ModuleList(nn.Embedding(n, channels) for n in field_sizes)
        for e in self.embeddings:
            nn.init.normal_(e.weight, std=0.05)
        self.proj = nn.Linear(channels * len(field_sizes), channels)

    def forward(self, x: tuple[torch.Tensor, ...]) -> torch.Tensor:
        return self.proj(torch.cat([e(f) for e, f in zip(self.embeddings, x, strict=True)], dim=1))


class ScoreHead(nn.Module):
    """(N, C) -> one relevance logit per pair, shape (N,)."""

    def __init__(self, channels: int):
        super().__init__()
        self.fc = nn.Linear(channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x).squeeze(-1)


def ranking_metrics(scores: torch.Tensor, group: int) -> dict[str, float]:
    """HR@10 and NDCG@10 of groups of ``group`` consecutive scores, positive first.
    Ties count against the positive (a constant model scores 0, not 1)."""
    if scores.numel() % group:
        raise RunFailed(f"ranking evaluation: {scores.numel()} scores do not form groups of {group}")
    s = scores.view(-1, group)
    rank = (s[:, 1:] >= s[:, :1]).sum(dim=1)
    hit = rank < TOP_K
    ndcg = torch.where(hit, 1.0 / torch.log2(rank.double() + 2.0), torch.zeros_like(rank, dtype=torch.double))
    return {f"hr@{TOP_K}": float(hit.double().mean()), f"ndcg@{TOP_K}": float(ndcg.mean())}


# --------------------------------------------------------------------------------------
# Tasks
# --------------------------------------------------------------------------------------


class RecsysConfig(ComponentConfig):
    min_rating: Optional[float] = Field(None, description="ratings below this are dropped (default: every rating is a positive)")
    num_negatives: int = Field(4, ge=1, le=100, description="sampled negatives per training positive")
    resample_negatives: bool = Field(True, description="draw fresh training negatives every epoch, as NCF does "
                                     "(false: the negatives of epoch 0 throughout)")
    num_eval_negatives: int = Field(99, ge=1, description="sampled negatives each held-out item is ranked against")
    split_seed: int = Field(0, ge=0, description="seed of the evaluation negatives, fixed across run seeds")
    limit_users: Optional[int] = Field(None, ge=2, description="keep only the first N users (by id order), for quick runs")


class RecsysTask(Task):
    """Base of the implicit-feedback tasks; subclasses implement :meth:`read`."""

    Config = RecsysConfig
    primary_metric = f"hr@{TOP_K}"
    metric_direction = "maximize"

    def read(self) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray, str]:
        """``(users, items, ratings or None, timestamps, source path)``."""
        raise NotImplementedError

    def interactions(self) -> Interactions:
        if not hasattr(self, "_inter"):
            cfg = self.config
            users, items, ratings, times, source = self.read()
            keep = np.ones(len(users), dtype=bool)
            if cfg.min_rating is not None:
                if ratings is None:
                    raise DataError(f"{self.name}: min_rating is set but {source} has no rating column")
                keep &= ratings >= cfg.min_rating
            if cfg.limit_users is not None:
                chosen = np.unique(users[keep])[: cfg.limit_users]
                keep &= np.isin(users, chosen)
            self._inter = Interactions(users[keep], items[keep], times[keep], source)
        return self._inter

    def load_data(self, seed: int) -> TaskData:
        cfg = self.config
        inter = self.interactions()
        k = cfg.num_eval_negatives
        eval_rng = np.random.default_rng(derive_seed(cfg.split_seed, self.name, "eval-negatives"))
        val = inter.eval_groups(1, k, eval_rng)
        test = inter.eval_groups(2, k, eval_rng)
        if len(test[0]) == 0:
            raise DataError(f"{self.name}: {inter.source}: no user has two or more interactions and "
                            f"{k} unseen items, so there is no leave-one-out test item")
        pos = inter.role == 0
        pu, pi = inter.users[pos], inter.items[pos]
        nu = np.repeat(pu, cfg.num_negatives)
        users = torch.from_numpy(np.concatenate([pu, nu])).long()
        labels = torch.from_numpy(np.concatenate([np.ones(len(pu), np.float32), np.zeros(len(nu), np.float32)]))
        name, resample = self.name, cfg.resample_negatives

        def make(epoch: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
            """The training rows of ``epoch``: the positives, then fresh negatives."""
            rng = np.random.default_rng(derive_seed(seed, name, "train-negatives", epoch if resample else 0))
            items = np.concatenate([pi, inter.sample_negatives(nu, rng)])
            return users, torch.from_numpy(items).long(), labels

        t = lambda u, i, y: TensorDataset(torch.from_numpy(u).long(), torch.from_numpy(i).long(),  # noqa: E731
                                          torch.from_numpy(y).float())
        return TaskData(train=EpochTensorDataset(make), val=t(*val), test=t(*test))

    def io_spec(self) -> IOSpec:
        inter = self.interactions()
        return IOSpec("recsys", (2,), 1, input_dtype=torch.int64,
                      extra={"fields": ["user", "item"], "field_sizes": [inter.num_users, inter.num_items]})

    def make_stem(self, channels: int) -> nn.Module:
        return FieldEmbeddingStem(self.io_spec().extra["field_sizes"], channels)

    def make_head(self, channels: int) -> nn.Module:
        return ScoreHead(channels)

    def loss_fn(self) -> nn.Module:
        return nn.BCEWithLogitsLoss()

    def compute_metrics(self, outputs: torch.Tensor, targets: torch.Tensor) -> dict[str, float]:
        return ranking_metrics(outputs.reshape(-1), 1 + self.config.num_eval_negatives)

    @torch.no_grad()
    def evaluate(self, model: nn.Module, split: Dataset, device: torch.device, batch_size: int = 4096) -> dict[str, float]:
        """HR@10 / NDCG@10 of each held-out item against its sampled negatives."""
        from dnas_core.training import predict

        scores, labels = predict(model, split, device, batch_size=batch_size)
        group = 1 + self.config.num_eval_negatives
        lab = labels.view(-1, group) if labels.numel() % group == 0 else None
        if lab is None or not bool((lab[:, 0] == 1).all() and (lab[:, 1:] == 0).all()):
            raise RunFailed(f"{self.name}: this split is not laid out in ranking groups of {group} rows "
                            f"(positive first); only the val and test splits can be ranked")
        metrics = ranking_metrics(scores.reshape(-1), group)
        metrics["loss"] = float(self.loss_fn()(scores.reshape(-1), labels.float()).item())
        metrics["users"] = float(len(lab))
        return metrics

    def descriptor(self) -> dict:
        d = super().descriptor()
        d["field_sizes"] = self.io_spec().extra["field_sizes"]
        return d


class MovieLensConfig(RecsysConfig):
    path: Optional[str] = Field(None, description="u.data, or the folder holding it (default: <data root>/recsys/ml-100k)")


class MovieLensTask(RecsysTask):
    """MovieLens-100K (943 users, 1,682 items, 100,000 ratings) from ``u.data``."""

    name = "movielens"
    default_data = "recsys/ml-100k"
    description = "MovieLens-100K u.data, implicit, leave-one-out, HR@10/NDCG@10 vs 99 sampled negatives"
    Config = MovieLensConfig

    def read(self):
        path = resolve_path(self.config.path, self.default_data, self.name, U_DATA_FORMAT)
        if path.is_dir():
            path = path / "u.data"
            if not path.is_file():
                raise DataError(f"movielens: {path} not found; expected {U_DATA_FORMAT}")
        users, items, ratings, times = read_u_data(path)
        return users, items, ratings, times, str(path)


class RatingsCSVConfig(RecsysConfig):
    path: str = Field(..., description="the ratings file (CSV or TSV with a header row)")
    user_col: str = Field("user", description="column of user ids (any string)")
    item_col: str = Field("item", description="column of item ids (any string)")
    time_col: str = Field("timestamp", description="column of numeric timestamps (the leave-one-out order)")
    rating_col: Optional[str] = Field(None, description="column of numeric ratings (needed for min_rating)")
    delimiter: Optional[str] = Field(None, min_length=1, max_length=1, description="field separator (default: sniffed)")


class RatingsCSVTask(RecsysTask):
    """A user's interaction log as CSV/TSV: one row per (user, item, timestamp)."""

    name = "ratings_csv"
    description = "a user's ratings CSV (user, item, timestamp[, rating]), same protocol as movielens"
    Config = RatingsCSVConfig

    def read(self):
        cfg = self.config
        path = resolve_path(cfg.path, "", self.name, f"a CSV with columns {cfg.user_col}, {cfg.item_col}, {cfg.time_col}")
        if not path.is_file():
            raise DataError(f"ratings_csv: {path} is not a file; expected a CSV/TSV ratings file")
        users, items, ratings, times = read_ratings_csv(path, cfg.user_col, cfg.item_col, cfg.time_col,
                                                        cfg.rating_col, cfg.delimiter)
        return users, items, ratings, times, str(path)
