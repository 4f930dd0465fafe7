"""Fixtures every suite shares: a real redis-server per session, a clean database per test."""

pytest_plugins = ["recsys_shared.testing.fixtures"]
