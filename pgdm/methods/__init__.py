"""Restoration methods, each one step function with a shared signature plus a host-precomputed coefficient table.

``METHODS`` maps a name to its :class:`Method`; ``pgdm.Restorer(den, method=name)`` and ``pgdm.engine`` run any of
them through the same plan and loop (docs/methods.md).
"""
from ..denoiser import input_vjp
from .common import Method, StepFunction, ddim_coefficients
from .cpigdm import cpigdm_coefficients, cpigdm_start_fraction, cpigdm_step
from .ddnm import ddnm_coefficients, ddnm_plus_step, ddnm_step
from .ddrm import ddrm_coefficients, ddrm_step
from .diffpir import diffpir_coefficients, diffpir_step, diffpir_task_defaults
from .dps import dps_coefficients, dps_step, dps_task_defaults
from .pigdm import guidance_vector, pigdm_coefficients, pigdm_step, reconstruction_vector, rg_step

__all__ = ["METHODS", "Method", "StepFunction", "get_method", "ddim_coefficients", "input_vjp",
           "pigdm_step", "pigdm_coefficients", "guidance_vector", "reconstruction_vector", "rg_step",
           "dps_step", "dps_coefficients", "dps_task_defaults", "ddnm_step", "ddnm_plus_step", "ddnm_coefficients",
           "diffpir_step", "diffpir_coefficients", "diffpir_task_defaults", "ddrm_step", "ddrm_coefficients", "cpigdm_step", "cpigdm_coefficients", "cpigdm_start_fraction"]  # fmt: skip

_PIGDM = "Song et al., ICLR 2023"
METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        Method("pigdm", pigdm_step, pigdm_coefficients, {"eta": 1.0, "weight": None}, "any", True, _PIGDM + ", Alg. 1"),
        Method("rg", rg_step, pigdm_coefficients, {"eta": 1.0, "weight": None}, "linear", True, _PIGDM + ", App. A.2 (Ho et al. 2022)"),
        Method("dps", dps_step, dps_coefficients, {"eta": 1.0, "scale": None}, "linear", True, "Chung et al., ICLR 2023, Alg. 1",
               dps_task_defaults),
        Method("ddnm", ddnm_step, ddnm_coefficients, {"eta": 1.0}, "any", False, "Wang et al., ICLR 2023, Alg. 1"),
        Method("ddnm+", ddnm_plus_step, ddnm_coefficients, {"eta": 1.0}, "any", False, "Wang et al., ICLR 2023, Eq. 17-19"),
        Method("diffpir", diffpir_step, diffpir_coefficients, {"lam": None, "zeta": None}, "any", False, "Zhu et al., CVPRW 2023, Alg. 1",
               diffpir_task_defaults),
        Method("ddrm", ddrm_step, ddrm_coefficients, {"eta": 1.0, "eta_b": 1.0}, "svd", False, "Kawar et al., NeurIPS 2022, Eq. 7-8"),
        Method("cpigdm", cpigdm_step, cpigdm_coefficients, {"w": 16.0, "lam": 0.0}, "linear", True, "Pandey et al., NeurIPS 2024, Sec. 2.3",
               start_fraction=cpigdm_start_fraction),
    )
}


def get_method(name: "str | Method") -> Method:
    """The :class:`Method` called ``name`` (a Method is returned as it is); one-line ValueError for unknown names."""
    if isinstance(name, Method):
        return name
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; expected one of {', '.join(METHODS)}")
    return METHODS[name]
