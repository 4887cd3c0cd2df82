#!/bin/sh
# The cache Job's entrypoint: `audio-score cache-build`, sharded when the Job is Indexed.
#   CACHE_SHARDS   number of shards (the Job's completions); with JOB_COMPLETION_INDEX (set by Kubernetes
#                  for an Indexed Job) each pod builds shard JOB_COMPLETION_INDEX of CACHE_SHARDS
#   CACHE_MODELS   comma-separated model keys (default: every model in config.json)
#   CACHE_FORCE    1: rebuild fresh entries too (--force)
# Any arguments are passed on to cache-build (e.g. --config /etc/audio-score/config.json).
set -eu

if [ -n "${CACHE_SHARDS:-}" ]; then
    if [ -z "${JOB_COMPLETION_INDEX:-}" ]; then
        echo "cache-job: CACHE_SHARDS=${CACHE_SHARDS} needs JOB_COMPLETION_INDEX (run as an Indexed Job)" >&2
        exit 2
    fi
    set -- --shards "${CACHE_SHARDS}" "$@"
elif [ -n "${JOB_COMPLETION_INDEX:-}" ]; then
    echo "cache-job: JOB_COMPLETION_INDEX is set but CACHE_SHARDS is not: building every clip in this pod" >&2
fi
if [ -n "${CACHE_MODELS:-}" ]; then
    set -- --models "${CACHE_MODELS}" "$@"
fi
case "${CACHE_FORCE:-0}" in
    1|true|yes) set -- --force "$@" ;;
esac

exec audio-score cache-build --no-progress "$@"
