#!/usr/bin/env bash
# Last line of `make test`: reached only when every suite passed (make stops at the first
# failure, and each suite prints its own "N passed, N failed" line).
echo "make test: every suite passed (unit, integration, asan+ubsan unit and integration, openai e2e)"
