"""Grids of runs over one store: the gain study (:mod:`.sweep`), spectra over gains
(:mod:`.gain_scan`) and flossing of untrained networks (:mod:`.floss_study`), all driven by the one
plan → template → resume → executor loop of :mod:`.grid`."""
