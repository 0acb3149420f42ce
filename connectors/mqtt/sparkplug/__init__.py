"""Sparkplug B host-application side: births, deaths, aliases, bdSeq and seq tracking, rebirth requests."""
