"""The errors a user can cause with a bad file or argument; the CLI prints these as one line."""

from human3r_jax.checkpoint import CheckpointFormatError
from human3r_jax.converters.parity import FixtureError
from human3r_jax.converters.rules import ConversionError
from human3r_jax.converters.torch_zip import CheckpointError
from human3r_jax.data.bedlam import DataError
from human3r_jax.data.bedlam_preprocess import BedlamError
from human3r_jax.data.images import ImageError
from human3r_jax.data.video import InputError
from human3r_jax.evaluation.body_models import BodyModelError
from human3r_jax.evaluation.depth_data import DepthDataError
from human3r_jax.evaluation.human_data import HumanDataError
from human3r_jax.evaluation.pose import PoseDataError
from human3r_jax.evaluation.runner import EvaluationError
from human3r_jax.models.smplx import SmplxError
from human3r_jax.outputs import OutputError
from human3r_jax.train.config import ConfigError
from human3r_jax.train.trainer import TrainError
from human3r_jax.viewer import ViewerError

USER_ERRORS = (CheckpointError, ConversionError, CheckpointFormatError, FixtureError, ImageError, SmplxError,
               InputError, ViewerError, DataError, BedlamError, ConfigError, TrainError, OutputError, EvaluationError,
               DepthDataError, PoseDataError, BodyModelError, HumanDataError, FileExistsError, FileNotFoundError)
