# Source this on the GPU machine from the repository root, then run `python -P -m speedtrace ...`
# (-P: the checkout root must not shadow the shim). Makes `speedtrace.*` importable from the
# working tree without installing (the image's setuptools may not map package folders editably).
# Wheels carried in .whl/ (e.g. msgspec, absent from the image) are installed to /tmp/site.
shim=/tmp/speedtrace-shim
rm -rf "$shim" && mkdir -p "$shim/speedtrace"
cp -r speedtrace/. "$shim/speedtrace/"
for p in trainer kernels profiling analysis; do ln -s "$PWD/$p" "$shim/speedtrace/$p"; done
export PYTHONPATH="$shim${PYTHONPATH:+:$PYTHONPATH}"
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH="$PYTHONPATH:/tmp/site"
fi
export PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
