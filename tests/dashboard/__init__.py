"""Tests of the release managers' dashboard: pages, sign-in, CSRF, and real Chromium."""
