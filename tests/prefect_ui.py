"""The Prefect UI's resume form, as a person uses it (Prefect 3.8/3.9, the default "v2" UI).

The run page (`/v2/runs/flow-run/<id>`) shows a "Paused" badge; "Open menu" (the kebab button at
the top right) holds "Resume", which opens the "Resume Flow Run" dialog: the RunInput's Markdown
description, then one field per RunInput field. An enum field is a button labelled
"Select <Field>" opening a list of options; a string field is a textarea labelled by its title.
The dialog's "Resume" button POSTs `/api/flow_runs/<id>/resume`: 201 with status ACCEPT resumes
the run, 200 with REJECT or ABORT refuses it (the reason shows in a toast).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from playwright.sync_api import Locator, Page, expect

RESUME_DIALOG = "Resume Flow Run"


@dataclass(frozen=True)
class ResumeAnswer:
    """The server's answer to the form: HTTP status and the orchestration result's JSON."""

    http_status: int
    body: dict[str, Any]

    @property
    def status(self) -> str:
        return self.body["status"]

    @property
    def reason(self) -> str:
        return (self.body.get("details") or {}).get("reason") or ""


class ResumeForm:
    def __init__(self, page: Page, dialog: Locator) -> None:
        self.page, self.dialog = page, dialog

    def choose(self, field: str, option: str) -> None:
        """Pick `option` of an enum field (a popover list, not a native <select>)."""
        self.dialog.get_by_role("button", name=f"Select {field}").click()
        self.page.get_by_role("listbox").get_by_role("option", name=option, exact=True).click()
        expect(self.dialog.get_by_role("button", name=f"Select {field}")).to_contain_text(option)

    def fill(self, field: str, text: str) -> None:
        self.dialog.get_by_label(field).fill(text)

    def submit(self) -> ResumeAnswer:
        with self.page.expect_response(lambda r: r.url.endswith("/resume") and r.request.method == "POST") as sent:
            self.dialog.get_by_role("button", name="Resume", exact=True).click()
        response = sent.value
        return ResumeAnswer(response.status, response.json())


def run_page(ui_url: str, flow_run_id: str) -> str:
    """The run's page in the default (v2) UI; `<ui>/runs/flow-run/<id>` serves the v1 UI."""
    return f"{ui_url}/v2/runs/flow-run/{flow_run_id}"


def open_resume_form(page: Page, ui_url: str, flow_run_id: str) -> ResumeForm:
    """Open the run's page, check it is Paused, and open its Resume dialog."""
    page.goto(run_page(ui_url, flow_run_id))
    expect(page.locator('[data-slot="badge"]', has_text="Paused").first).to_be_visible()
    page.get_by_role("button", name="Open menu").click()
    page.get_by_role("menuitem", name="Resume").click()
    dialog = page.get_by_role("dialog", name=RESUME_DIALOG)
    expect(dialog).to_be_visible()
    return ResumeForm(page, dialog)
