"""JupyterLab for the workbench (`make lab`): notebooks are saved without their outputs.

The committed notebooks stay clean (``tests/test_notebooks.py``) however the
lab is used: JupyterLab's autosave used to write outputs, widget state and
execution counts into them, and the next `make test` failed. `make lab`
passes :func:`scrub_outputs` as the server's pre-save hook
(``--FileContentsManager.pre_save_hook=omgkit.lab.scrub_outputs``): what is
on screen stays in the browser; what is written to disk is the notebook's
cells. To keep a run's outputs, papermill (or File > Export) writes them
elsewhere.
"""

from __future__ import annotations

from typing import Any

PRE_SAVE_HOOK = "omgkit.lab.scrub_outputs"


def scrub_outputs(model: dict[str, Any], **_: Any) -> None:
    """Jupyter's pre-save hook: drop every code cell's outputs and execution count, and
    the widget state and execution timings JupyterLab records in metadata."""
    if model.get("type") != "notebook" or not isinstance(model.get("content"), dict):
        return
    nb = model["content"]
    nb.get("metadata", {}).pop("widgets", None)
    for cell in nb.get("cells", []):
        cell.get("metadata", {}).pop("execution", None)
        if cell.get("cell_type") == "code":
            cell["outputs"] = []
            cell["execution_count"] = None
