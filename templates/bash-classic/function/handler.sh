#!/usr/bin/env bash
# The request body arrives on stdin; what the script prints is the response (stderr too, in
# mode classic). Request headers are in the environment: Http_Method, Http_Path, Http_Query,
# Http_Content_Type, ... A non-zero exit answers 500.
set -euo pipefail

body=$(cat)
printf 'Hello from bash! %s %s, you said: %s\n' "${Http_Method:-?}" "${Http_Path:-/}" "$body"
