# Builds the edp image and pushes it to Amazon ECR.
#
#   scripts/build-and-push.ps1 -Region eu-west-1 -AccountId 123456789012 [-Tag v1] [-Repository edp]
#
# Needs docker and the AWS CLI with credentials allowed to push to the repository (created if
# missing). The tag defaults to the current git commit.
param(
    [Parameter(Mandatory = $true)][string]$Region,
    [Parameter(Mandatory = $true)][string]$AccountId,
    [string]$Tag = "",
    [string]$Repository = "edp"
)
$ErrorActionPreference = "Stop"
Set-Location (Join-Path $PSScriptRoot "..")

if ($Tag -eq "") {
    $Tag = (git rev-parse --short HEAD 2>$null)
    if (-not $Tag) { $Tag = "latest" }
}
$Registry = "$AccountId.dkr.ecr.$Region.amazonaws.com"

aws ecr describe-repositories --region $Region --repository-names $Repository *> $null
if ($LASTEXITCODE -ne 0) {
    aws ecr create-repository --region $Region --repository-name $Repository --image-scanning-configuration scanOnPush=true | Out-Null
    if ($LASTEXITCODE -ne 0) { throw "creating repository $Repository failed" }
}
aws ecr get-login-password --region $Region | docker login --username AWS --password-stdin $Registry
if ($LASTEXITCODE -ne 0) { throw "docker login failed" }
docker build -t "${Repository}:${Tag}" .
if ($LASTEXITCODE -ne 0) { throw "docker build failed" }
docker tag "${Repository}:${Tag}" "$Registry/${Repository}:${Tag}"
docker push "$Registry/${Repository}:${Tag}"
if ($LASTEXITCODE -ne 0) { throw "docker push failed" }
Write-Output "pushed $Registry/${Repository}:${Tag}"
