#!/usr/bin/env bash
# Builds, here (with the .NET SDK), what the GPU machine runs: a self-contained, compressed single-file publish of
# benchmarks/Spdf.Gpu.Benchmarks for linux-x64 (~55 MB; the machine has no .NET and reaches no package registry).
# Then run benchmarks/gpu/run.sh there, carrying benchmarks/gpu/publish (see docs/benchmarks.md, "GPU kernels").
set -euo pipefail
cd "$(dirname "$0")/../.."
rm -rf benchmarks/gpu/publish
dotnet publish benchmarks/Spdf.Gpu.Benchmarks -c Release -r linux-x64 --self-contained \
  -p:PublishSingleFile=true -p:EnableCompressionInSingleFile=true -p:DebugType=none -p:GenerateDocumentationFile=false \
  -o benchmarks/gpu/publish
du -sh benchmarks/gpu/publish
