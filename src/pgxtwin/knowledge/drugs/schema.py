"""Schema of a drug-library file (one YAML file per drug in ``library/``), validated with pydantic.

Every number carries its source (PMID, label section, guideline table).  Units inside the
program: mg, L, h, mg/L; the file states units explicitly and the loader checks them.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

SOURCE_MIN = 8  # e.g. "PMID 123" at the very least


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Sourced(_Strict):
    """A number with the reference it comes from."""

    value: float
    source: str = Field(min_length=SOURCE_MIN)
    note: str | None = None


class Parameter(Sourced):
    """A typical value of a model parameter, with its unit (converted to the internal unit)."""

    unit: str


class Analyte(_Strict):
    name: str
    description: str | None = None
    role: Literal["parent", "metabolite"] | None = Field(
        default=None, description="parent_metabolite models: which output this analyte is (else: by order)"
    )


class ModelSpec(_Strict):
    """Which structure of ``pgxtwin.pk.models`` the drug uses and how its outputs are named."""

    structure: Literal[
        "one_compartment", "two_compartment", "michaelis_menten", "parent_metabolite", "warfarin_inr"
    ]
    routes: list[Literal["oral", "iv_bolus", "iv_infusion"]] = Field(min_length=1)
    analytes: list[Analyte] = Field(min_length=1, description="first = the drug's main analyte")
    source: str = Field(min_length=SOURCE_MIN)


class Variability(_Strict):
    """Between-subject variability: log-normal, omega given as CV (fraction) per parameter."""

    cv: dict[str, Sourced] = Field(default_factory=dict)
    correlations: list[tuple[str, str, Sourced]] = Field(default_factory=list)


class Residual(_Strict):
    proportional: Sourced | None = Field(default=None, description="CV as a fraction")
    additive: Parameter | None = Field(default=None, description="SD in mg/L")


class Covariate(_Strict):
    """A covariate effect on one parameter.

    - ``allometric_weight``: P = P_typ * (WT / reference)^exponent
    - ``renal_function``:    CL = CL_typ * [(1 - fraction) + fraction * CrCL / reference]
    - ``age``:               P = P_typ * (1 + slope * (AGE - reference))
    - ``female``:            P = P_typ * factor for women
    """

    parameter: str
    kind: Literal["allometric_weight", "renal_function", "age", "female"]
    reference: float | None = None
    exponent: Sourced | None = None
    fraction: Sourced | None = None
    slope: Sourced | None = None
    factor: Sourced | None = None
    source: str = Field(min_length=SOURCE_MIN)


class GenotypeEffect(_Strict):
    """How a gene changes one parameter (normally a clearance or Vmax).

    - ``fm_activity``: P_g = P_ref * [fm * a + (1 - fm)], a = relative activity of the patient's
      phenotype (knowledge/drugs/enzymes.yaml), P_ref = the normal-metabolizer value;
    - ``per_phenotype`` / ``per_diplotype``: P_g = P_ref * factor[group] (literature factors);
      groups without a factor fall back to ``fm_activity`` when ``fm`` is given, else fail.
    """

    gene: str
    parameter: str
    method: Literal["fm_activity", "per_phenotype", "per_diplotype"]
    fm: Sourced | None = None
    forms_metabolite: bool = Field(
        default=False,
        description="parent_metabolite models: this pathway is the one forming the metabolite, so the"
        " formation fraction follows the enzyme: fm_g = fm * a / (fm_path * a + 1 - fm_path)",
    )
    factors: dict[str, Sourced] = Field(default_factory=dict)
    source: str = Field(min_length=SOURCE_MIN)

    @model_validator(mode="after")
    def _needs_data(self) -> "GenotypeEffect":
        if self.method == "fm_activity" and self.fm is None:
            raise ValueError("fm_activity needs fm")
        if self.method != "fm_activity" and not self.factors:
            raise ValueError(f"{self.method} needs factors")
        return self


class Window(_Strict):
    """A concentration window / threshold for the main analyte (or ``analyte``)."""

    metric: Literal["trough", "css_avg", "cmax", "auc_tau", "concentration"]
    low: float | None = None
    high: float | None = None
    unit: str
    analyte: str | None = None
    source: str = Field(min_length=SOURCE_MIN)


class Regimen(_Strict):
    dose: str = Field(description="e.g. '75 mg' or '0.1 mg/kg'")
    interval_h: float = Field(gt=0)
    loading_dose: str | None = None
    route: Literal["oral", "iv_bolus", "iv_infusion"] = "oral"
    infusion_h: float | None = None
    source: str = Field(min_length=SOURCE_MIN)


class Dosing(_Strict):
    """Labelled dosing.  The maximum single dose is absolute (mg) or, where the label doses by
    weight without an absolute cap, per kg (``max_single_dose_mg_per_kg``): exactly one is given."""

    standard: Regimen
    strengths_mg: list[float] = Field(min_length=1)
    intervals_h: list[float] = Field(min_length=1)
    max_single_dose_mg: Sourced | None = None
    max_single_dose_mg_per_kg: Sourced | None = None
    max_daily_dose_mg: Sourced | None = None

    @model_validator(mode="after")
    def _one_maximum(self) -> "Dosing":
        if (self.max_single_dose_mg is None) == (self.max_single_dose_mg_per_kg is None):
            raise ValueError("give exactly one of max_single_dose_mg or max_single_dose_mg_per_kg")
        return self

    def max_single_mg(self, weight_kg: float | None) -> tuple[float, str] | None:
        """The maximum single dose in mg for a patient of ``weight_kg`` and its source; None when
        the maximum is per kg and the weight is unknown (nothing to compare with)."""
        if self.max_single_dose_mg is not None:
            return self.max_single_dose_mg.value, self.max_single_dose_mg.source
        per_kg = self.max_single_dose_mg_per_kg
        assert per_kg is not None
        if weight_kg is None:
            return None
        return per_kg.value * weight_kg, f"{per_kg.value:g} mg/kg x {weight_kg:g} kg; {per_kg.source}"


class Drug(_Strict):
    """One drug of the library."""

    name: str = Field(pattern=r"^[a-z0-9_-]+$")
    synonyms: list[str] = Field(default_factory=list)
    rxnorm_ingredient: str | None = Field(default=None, description="RxNorm CUI of the ingredient")
    model: ModelSpec
    parameters: dict[str, Parameter]
    variability: Variability = Variability()
    residual: Residual = Residual()
    covariates: list[Covariate] = Field(default_factory=list)
    genotype_effects: list[GenotypeEffect] = Field(default_factory=list)
    therapeutic_window: Window | None = None
    toxicity_thresholds: list[Window] = Field(default_factory=list)
    dosing: Dosing
    cpic_genes: list[str] = Field(default_factory=list, description="genes of the CPIC guideline for this drug")
    notes: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _references(self) -> "Drug":
        names = set(self.parameters)
        for effect in self.genotype_effects:
            if effect.parameter not in names:
                raise ValueError(f"genotype effect on unknown parameter {effect.parameter!r}")
        for cov in self.covariates:
            if cov.parameter not in names:
                raise ValueError(f"covariate on unknown parameter {cov.parameter!r}")
        for name in self.variability.cv:
            if name not in names:
                raise ValueError(f"variability on unknown parameter {name!r}")
        return self


class EnzymeActivity(_Strict):
    """``enzymes/<GENE>.yaml``: relative activity ``a`` (normal = 1) of each phenotype of a gene.

    For genes with a CPIC activity score (CYP2D6, CYP2C9, DPYD) ``activity_score_reference``
    is the normal score (2): a patient's ``a`` is then AS / reference, finer than the phenotype.
    """

    gene: str
    phenotypes: dict[str, Sourced]
    activity_score_reference: Sourced | None = None
    source: str = Field(min_length=SOURCE_MIN)


class Perpetrator(_Strict):
    """A co-medication that inhibits or induces an enzyme/transporter."""

    drug: str
    gene: str
    effect: Literal["strong_inhibitor", "moderate_inhibitor", "weak_inhibitor", "strong_inducer", "moderate_inducer"]
    activity_multiplier: Sourced
    source: str = Field(min_length=SOURCE_MIN)


class Interactions(_Strict):
    """``interactions.yaml``: co-medications that change enzyme/transporter activity."""

    perpetrators: list[Perpetrator]
