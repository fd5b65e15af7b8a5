"""report.html escapes what it prints (issue 26, part 6): a value read from the sweep's files (sweep.json's
mode, a path, a source, a class name) that holds markup lands as text, never as a live element."""

from test_report_build import tandon_folder  # noqa: F401  (the fixture: a results folder alone)

from fer_tune.search.report import html

MARKUP = "<script>alert(1)</script>"


def poisoned(report: dict) -> dict:
    """The report with markup appended to every string a sweep's files can carry into the page's text."""
    report = {**report, "data": {**report["data"]}}
    for key in ("sweep", "space_path", "mode"):
        report[key] = report[key] + MARKUP
    report["data"]["source"] = str(report["data"]["source"]) + MARKUP
    report["data"]["images"] = {f"{k}{MARKUP}": v for k, v in report["data"]["images"].items()}
    return report


def test_markup_from_the_sweeps_files_lands_as_text(tandon_folder):  # noqa: F811
    from fer_tune.search.report.build import write_report

    page = html.render(poisoned(write_report(tandon_folder)), tandon_folder)
    assert "<script" not in page
    assert page.count("&lt;script&gt;alert(1)&lt;/script&gt;") >= 5
