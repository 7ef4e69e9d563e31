"""safarani2021's V1 co-training (Sec. 2 "Architecture" and "Training", Fig. 1): the network is
trained on image classification and, jointly, to predict neural responses from one of its
layers through a Gaussian readout; the two losses are balanced by learned observation noise.

At every training step ``round(neural_batch_ratio * batch_size)`` neural stimuli (at least one;
drawn without replacement, epoch after epoch, from a seeded generator) are passed through the
whole model (its input normalization included) up to ``layer``, whose output is captured by a
forward hook that then stops the pass (the layers above the shared part get neither the neural
images nor gradients from them, as in the paper where only the layers up to conv-3-1 are shared).
The loss minimized is (Kendall, Gal & Cipolla 2018; the paper's combined loss and its code's
``XEntropyLossWrapper`` / ``MSELossWrapper``), with learned ``s = log sigma^2``::

    L = exp(-s_task) * L_task + s_task / 2  +  c * exp(-s_neural) * L_neural + s_neural / 2

classification (a softmax likelihood scaled by 1 / sigma^2): ``exp(-s) L_CE + s / 2``;
regression (Gaussian likelihood, ``loss: mse``): ``c = 1/2``, ``exp(-s) L_MSE / 2 + s / 2``;
Poisson (``loss: poisson``): ``c = 1``, treated as the classification term (a tempered
likelihood). ``L_task`` is the loss handed over by the trainer (cross-entropy plus the terms of
objectives listed before this one). ``weighting: equal`` sums the two losses instead (the code's
``loss_weighing: False``); the log-variances are then not trained.

Neural loss: ``poisson`` (default) is the full Poisson negative log-likelihood,
``mean(rate - y * log(rate + 1e-8) + lgamma(y + 1))`` (neuralpredictors ``PoissonLoss`` plus its
dropped constant; the paper's single-task loss and the natural one for spike counts; responses
must be non-negative). The constant matters here: the learned weighting needs a loss bounded
below by 0 (without it the loss goes negative and ``exp(-s) L`` drives ``s`` to minus infinity);
the reference code, when it weighs a count loss, also uses a full likelihood (negative binomial).
``mse`` is what the paper used in MTL, where the targets are a Monkey Predictor's noise-free
predictions. Targets are the trial-averaged responses (``NeuralData.mean_responses``; the NLL is
evaluated at the non-integer mean count through ``lgamma``); NaN targets are left out.

Readout (:class:`GaussianReadout`, compact version of Lurz et al. 2021 / sinzlab
neuralpredictors): per neuron a learned position ``mu`` in [-1, 1]^2 of the feature map; in
training the position is sampled, ``mu + sigma * N(0, I)`` per image (isotropic learned
``sigma``, as the legacy ``Gaussian2d`` used by safarani's code; neuralpredictors'
``FullGaussian2d`` learns a full covariance); at evaluation the mean ``mu`` is used. The map is
read at that position by bilinear interpolation (``F.grid_sample``, ``align_corners=True``),
weighted by per-neuron feature weights (init 1 / channels), plus a bias, then ``ELU + 1`` for
non-negative rates. Initialization as safarani's ``MTL_VGG``: mu ~ U(-0.4, 0.4), sigma ~
U(0, 0.6); the bias is initialized so that the initial rate is the mean training response (the
code sets the bias to the mean and uses ``ELU(x - 1) + 1``). No L1 penalty on the feature
weights (the published MTL configuration does not add it: ``scale_loss`` is off).

``layer`` is resolved in the network's ``named_modules()`` (before input normalization): an
exact name (``features.conv3_1``), else the unique module whose name ends with ``.<layer>``
(``conv3_1``), else ``conv:N``, the output of the N-th ``nn.Conv2d`` in module order (raw
convolution output). For ``vgg19_bn_fcn`` the default ``conv3_1`` is conv-3-1 after its BatchNorm
and ReLU (safarani's code: ``vgg.features[:17]``); for other models give a module name or
``conv:N`` (``conv:5`` is conv3_1's raw output in VGG-19).

Data: ``data`` names a ``neural_data`` plugin; ``test_fraction`` of its stimuli (seeded by
``split_seed``) are held out for evaluation (``epoch_metrics`` after every epoch and the
``neural_predictivity`` benchmark). Stimuli are fitted to the model's input (channels, size) as
the task images are. ``shuffle`` is the paper's MTL-Shuffled control: the training responses
are permuted across stimuli, independently for every neuron (seeded by ``split_seed``; all
repeats of a stimulus move together), so each neuron keeps its set of responses but loses the
stimulus they belong to; held-out responses are never shuffled.

BatchNorm: the neural pass runs in training mode, so the shared BatchNorm layers normalize
neural batches with their own statistics and their running averages mix task and neural images
(as in the reference code). Task images and neural stimuli should therefore come from similar
distributions (the paper: Tiny ImageNet and ImageNet); with very different ones the evaluation
statistics fit neither (the quick submission draws its synthetic stimuli from the digits).

Deviations (documented): the paper co-trains on a Monkey Predictor's responses to the
classification images (Tiny ImageNet) and measures FEV on recorded test images; here the readout
learns the given data's own stimulus-response pairs (a ``neural_file`` of predictor responses to
task images reproduces the paper's setup; ``neural_predictivity``'s ``data`` evaluates on
recordings). The readout's parameters and the log-variances are part of the model's weights
(saved and cached with them); positions, sigmas and log-variances get no weight decay.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from bioprior.plugin import (
    UNKNOWN_GEOMETRY,
    Constraint,
    InputGeometry,
    NeuralDataRef,
    PluginParams,
    hookimpl,
)

SAFARANI2021 = (
    "Safarani, Nix, Willeke, Cadena, Restivo, Denfield, Tolias & Sinz (2021), Towards robust "
    "vision by multi-task learning on monkey visual cortex (NeurIPS); Kendall, Gal & Cipolla "
    "(2018); Lurz et al. (2021) Gaussian readout"
)


def _default_data() -> NeuralDataRef:
    # Not validated here (that would load the registry while it registers this plugin); a
    # submission's own ``data`` is validated against the registry.
    return NeuralDataRef.model_construct(name="synthetic_v1", params={})


class NeuralCoTrainingParams(PluginParams):
    layer: str = Field(
        default="conv3_1",
        description="Shared layer read by the readout: a module name in net.named_modules() "
        "(exact, or the unique one ending with it) or 'conv:N' (the N-th Conv2d's output). "
        "vgg19_bn_fcn: conv3_1 = conv-3-1 after BN + ReLU (the paper's layer).",
    )
    data: NeuralDataRef = Field(
        default_factory=_default_data,
        description="Neural data {name, params} (stimuli + responses; default synthetic_v1, "
        "SYNTHETIC, not recordings).",
    )
    neural_batch_ratio: float = Field(
        default=1.0,
        gt=0,
        le=64,
        description="Neural stimuli per task image at every step (the paper's batch ratio, "
        "1:15 to 5:1; its code's default 1:1).",
    )
    shuffle: bool = Field(
        default=False,
        description="MTL-Shuffled control: training responses permuted across stimuli, per neuron.",
    )
    loss: Literal["poisson", "mse"] = Field(
        default="poisson",
        description="Neural loss: Poisson NLL (spike counts) or MSE (the paper's MTL, on a "
        "predictor's noise-free responses).",
    )
    weighting: Literal["learned", "equal"] = Field(
        default="learned",
        description="learned: Kendall et al. observation-noise weighting; equal: task + neural.",
    )
    test_fraction: float = Field(
        default=0.2, ge=0, lt=1, description="Fraction of neural stimuli held out for evaluation."
    )
    split_seed: int = Field(
        default=0,
        description="Seed of the held-out split and of the shuffle permutation (fixed across "
        "training seeds: every model is evaluated on the same stimuli).",
    )
    init_mu_range: float = Field(
        default=0.4, gt=0, le=1, description="Readout positions start in U(-r, r)^2 (code: 0.4)."
    )
    init_sigma: float = Field(
        default=0.6, ge=0, le=2, description="Readout sigmas start in U(0, s) (code: 0.6)."
    )


class NeuralCoTraining(Constraint):
    """Attach a :class:`~bioprior.plugins.neural_cotraining.nn.NeuralCoTrainingObjective`
    (readout + learned loss weights) to the net with ``attach_objective``."""

    def apply(self, module, geometry: InputGeometry = UNKNOWN_GEOMETRY):
        from bioprior.plugins.neural_cotraining.nn import attach

        return attach(module, self.params, geometry)


@hookimpl
def register_constraints(register):
    register(
        name="neural_cotraining",
        factory=NeuralCoTraining,
        params=NeuralCoTrainingParams,
        version="1",
        citation=SAFARANI2021,
        description="Co-train a Gaussian readout of a layer (default conv3_1) on neural responses, "
        "losses weighted by learned observation noise; shuffle control.",
    )
