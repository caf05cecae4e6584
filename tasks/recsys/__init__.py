"""Recommendation tasks: MovieLens-100K (``u.data``) and a user's ratings CSV, implicit
feedback with leave-one-out splits and HR@10 / NDCG@10 against 99 sampled negatives.
Registered by the ``recsys`` plugin."""

from dnas_core import hookimpl

from .tasks import Interactions, MovieLensTask, RatingsCSVTask, ranking_metrics, read_u_data

__all__ = ["Interactions", "MovieLensTask", "RatingsCSVTask", "ranking_metrics", "read_u_data"]


@hookimpl
def dnas_register_tasks():
    return [MovieLensTask, RatingsCSVTask]
