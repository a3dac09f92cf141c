"""Helpers for Airlock's system tests: real peers (sipp, rtpengine, age, promtool) on loopback."""
