"""The Prefect UI's resume form, as a person uses it (Prefect 3.8/3.9).

Prefect serves two UIs. The default one ("v2", React) lives under `/v2/`: its run page
(`/v2/runs/flow-run/<id>`) holds "Resume" under "Open menu" (the kebab button at the top right);
an enum field is a button labelled "Select <Field>" opening a list of options, a string field a
textarea labelled by its title; the dialog's button is "Resume". A deep link without `/v2`
(`/runs/flow-run/<id>`, the link Prefect and Siaga print) opens the older "v1" UI (Vue) for a
browser with no saved preference: a "Resume" button on the page, fields found by their label
text, enum lists opened from the keyboard (ArrowDown; a click leaves them closed in headless
chromium), and a "Submit" button.

Both open a "Resume Flow Run" dialog: the RunInput's Markdown description, then its fields.
Submitting POSTs `/api/flow_runs/<id>/resume`: 201 with status ACCEPT resumes the run, 200 with
REJECT or ABORT refuses it (the reason shows in a toast).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from playwright.sync_api import TimeoutError as PlaywrightTimeoutError
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
    """The open "Resume Flow Run" dialog of the v2 UI."""

    submit_label = "Resume"

    def __init__(self, page: Page, dialog: Locator) -> None:
        self.page, self.dialog = page, dialog

    def choose(self, field: str, option: str) -> list[str]:
        """Pick `option` of an enum field (a popover list, not a native <select>); returns
        every option the list offered."""
        self._open_list(field)
        offered = [name.strip() for name in self.page.get_by_role("option").all_inner_texts()]
        chosen = self.page.get_by_role("option", name=option, exact=True)
        try:
            chosen.click(timeout=5000)
        except PlaywrightTimeoutError:  # the popover list drawn partly outside the window: pick it as a key press would
            chosen.dispatch_event("click")
        expect(self._list_button(field)).to_contain_text(option)
        return offered

    def fill(self, field: str, text: str) -> None:
        self.dialog.get_by_label(field).fill(text)

    def submit(self) -> ResumeAnswer:
        """Press the dialog's button; as a person would, press it again while Prefect's server on
        SQLite answers 503 ("database is locked", under the load of the parallel tests)."""
        for _ in range(5):
            with self.page.expect_response(lambda r: r.url.endswith("/resume") and r.request.method == "POST") as sent:
                self.dialog.get_by_role("button", name=self.submit_label, exact=True).click()
            response = sent.value
            if response.status != 503:
                break
            self.page.wait_for_timeout(2000)
        return ResumeAnswer(response.status, response.json())

    def _list_button(self, field: str) -> Locator:
        return self.dialog.get_by_role("button", name=f"Select {field}")

    def _open_list(self, field: str) -> None:
        self._list_button(field).click()
        expect(self.page.get_by_role("option").first).to_be_visible()


class V1ResumeForm(ResumeForm):
    """The same dialog in the v1 UI: its labels are not tied to their inputs."""

    submit_label = "Submit"

    def fill(self, field: str, text: str) -> None:
        self._field(field).locator("textarea").fill(text)

    def _field(self, field: str) -> Locator:
        label = self.page.locator(".schema-form-property__label", has_text=re.compile(rf"^{re.escape(field)}\b"))
        return self.dialog.locator(".schema-form-property", has=label).locator("fieldset")

    def _list_button(self, field: str) -> Locator:
        return self._field(field).get_by_role("button")

    def _open_list(self, field: str) -> None:
        self._list_button(field).press("ArrowDown")
        expect(self.page.get_by_role("option").first).to_be_visible()


def run_page(ui_url: str, flow_run_id: str) -> str:
    """The run's page in the default (v2) UI."""
    return f"{ui_url}/v2/runs/flow-run/{flow_run_id}"


def open_resume_form(page: Page, url: str) -> ResumeForm:
    """Open a run's page (`url`, in either UI), check that it is Paused (or Suspended, a pause that
    holds no process), open its Resume dialog."""
    page.goto(url)
    expect(page.get_by_text(re.compile(r"^(Paused|Suspended)$")).first).to_be_visible()
    if urlsplit(url).path.startswith("/v2/"):
        page.get_by_role("button", name="Open menu").click()
        page.get_by_role("menuitem", name="Resume").click()
        form = ResumeForm(page, page.get_by_role("dialog", name=RESUME_DIALOG))
    else:
        page.get_by_role("button", name="Resume").click()
        form = V1ResumeForm(page, page.get_by_role("dialog").filter(has_text=RESUME_DIALOG))
    expect(form.dialog).to_be_visible()
    return form
