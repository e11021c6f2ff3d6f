"""Which edits go by FlowEdit (Kulikov et al. 2024, "FlowEdit: Inversion-Free Text-Based Editing Using Pre-Trained
Flow Models"), on every backend that has it: noor-tiny (`NoorTinyPipeline._flow_edit`) and the open flow-matching
families (`noor.engine.diffusers.flowedit`).

FlowEdit needs the prompt the source was drawn from (`Task.source_prompt`): it moves the clean source by the
difference between the model's velocity under the new prompt and under that one, so what the two prompts share
cancels and only what the new prompt changes is drawn. The adhere and flex modes keep their source's layout that
way; the reimagine modes, which are meant to leave the source behind, and sources without a prompt redraw the source
from the mode's level (SDEdit)."""

from __future__ import annotations

from noor.engine.task import Task

FLOW_EDIT_MODES = frozenset({"adhere_1", "adhere_2", "adhere_3", "flex_1", "flex_2", "flex_3"})


def flow_edit(task: Task) -> bool:
    """Whether a task is edited by FlowEdit (an edit in FLOW_EDIT_MODES whose source's prompt is known)."""
    return task.operation == "edit" and task.source_prompt is not None and task.edit_mode in FLOW_EDIT_MODES
