// Reports module: report.html / report.md builders land here.
