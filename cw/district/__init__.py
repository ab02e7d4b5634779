"""What a person does to a district, in one place: answer, retry, cancel, edit, stop, resume.

The CLI, the file-system UI and any later interface call :class:`District`; none of them moves
a task or sends work by itself.
"""

from cw.district.actions import District

__all__ = ["District"]
