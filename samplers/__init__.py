"""widebnn.samplers: posterior samplers for finite-width Bayesian networks."""

from ._convergence import SamplerWarning as SamplerWarning
from ._hmc import hmc as hmc
from ._posterior import Posterior as Posterior
from ._ratio import log_density_ratio as log_density_ratio
from ._rejection import (
    RejectionBudgetError as RejectionBudgetError,
    RejectionPosterior as RejectionPosterior,
    rejection as rejection,
)
from ._rejection_bounds import log_likelihood_bound as log_likelihood_bound
from ._reprior import (
    check_data as check_data,
    log_density_fn as log_density_fn,
    log_marginal_likelihood as log_marginal_likelihood,
    readout_factor as readout_factor,
    readout_forward as readout_forward,
    readout_inverse as readout_inverse,
    repriorise as repriorise,
    repriorised_log_density as repriorised_log_density,
    sharded_log_density_fn as sharded_log_density_fn,
    standard_log_density as standard_log_density,
    unrepriorise as unrepriorise,
)
