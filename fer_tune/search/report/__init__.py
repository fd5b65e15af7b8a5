"""A sweep's report (results/<sweep>/report.html and report.json): what to deploy, how sure, what mattered,
what it cost. Built from results/<sweep>/ alone: `build_report(folder)`."""
