#!/bin/sh
# Operator re-run: what to do on a VM whose first-boot enrollment needs another go (roles were still
# propagating, the proxy was down, ...). Every step is safe on an already enrolled machine.
set -e
# 1. Who am I to Azure? Token claims and where each setting comes from (the token is never printed).
arc-enroll token
# 2. How will Azure be reached? (IMDS is always direct.)
arc-enroll proxy https://management.azure.com/
# 3. Enroll (idempotent: an enrolled machine exits 0 at once; a clone enrolls as itself).
arc-enroll connect -v
