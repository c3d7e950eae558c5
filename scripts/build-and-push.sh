#!/usr/bin/env bash
# Builds the edp image and pushes it to Amazon ECR.
#
#   scripts/build-and-push.sh --region eu-west-1 --account-id 123456789012 [--tag v1] [--repository edp]
#
# Needs docker and the AWS CLI with credentials allowed to push to the repository (created if
# missing). The tag defaults to the current git commit.
set -euo pipefail
cd "$(dirname "$0")/.."

region="" account="" tag="$(git rev-parse --short HEAD 2>/dev/null || echo latest)" repo="edp"
while [ $# -gt 0 ]; do
    case "$1" in
        --region) region="$2"; shift 2 ;;
        --account-id) account="$2"; shift 2 ;;
        --tag) tag="$2"; shift 2 ;;
        --repository) repo="$2"; shift 2 ;;
        -h|--help) sed -n '2,8p' "$0"; exit 0 ;;
        *) echo "build-and-push.sh: unknown argument $1" >&2; exit 2 ;;
    esac
done
if [ -z "$region" ] || [ -z "$account" ]; then
    echo "build-and-push.sh: --region and --account-id are required" >&2
    exit 2
fi

registry="$account.dkr.ecr.$region.amazonaws.com"
aws ecr describe-repositories --region "$region" --repository-names "$repo" >/dev/null 2>&1 \
    || aws ecr create-repository --region "$region" --repository-name "$repo" \
        --image-scanning-configuration scanOnPush=true >/dev/null
aws ecr get-login-password --region "$region" | docker login --username AWS --password-stdin "$registry"
docker build -t "$repo:$tag" .
docker tag "$repo:$tag" "$registry/$repo:$tag"
docker push "$registry/$repo:$tag"
echo "pushed $registry/$repo:$tag"
