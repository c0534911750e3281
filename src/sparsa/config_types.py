"""Field types shared by the validated configurations (pruning recipes, sparse-training configs), so that a
module pattern list or a sparsity is read and checked the same way wherever a user writes one."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator

from .structure import check_sparsity

__all__ = ["Patterns", "Sparsity"]


def _listify(v: Any) -> Any:
    return [v] if isinstance(v, str) else v


# module patterns (class names, 're:' regular expressions on names, full names): one string or a list of them
Patterns = Annotated[list[str], BeforeValidator(_listify)]

# a fraction of zeros in [0, 1)
Sparsity = Annotated[float, AfterValidator(check_sparsity)]
