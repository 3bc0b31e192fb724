#!/usr/bin/env python3
"""Checks the Lambda artifacts that `sam build` and `cdk synth` (with bundling) produced.

    check_build.py sam [--build-dir infra/.aws-sam/build] [--expect arm64] [--max-bytes N] [--pin]
    check_build.py compare [--build-dir …] [--cdk-out infra/cdk/cdk.out]
    check_build.py self-test

`sam`: every function of the built template has a `bootstrap` that is a 64-bit little-endian ELF
for one architecture, all the same (and `--expect`'s, if given), each at most `--max-bytes`
(6 MB: what a function's zip may be is 50 MB, but a bigger binary is a regression, docs/deploy.md).
With `--pin`, the built template's `Architecture` parameter then allows only that architecture,
which is the guard against a deploy with another one: `sam deploy` deploys the built template,
and CloudFormation refuses a value outside `AllowedValues` before it changes anything.

`compare`: the CDK assembly's functions are the SAM build's, byte for byte (one cargo build
serves both: same command, same target directory).

Runs in the project's virtualenv (the SAM CLI's YAML reader and writer, which know the short
intrinsic tags).
"""

import argparse
import contextlib
import hashlib
import io
import json
import pathlib
import sys

ELF_MACHINES = {0xB7: "arm64", 0x3E: "x86_64"}
ROOT = pathlib.Path(__file__).resolve().parent.parent


def elf_architecture(path):
    """The Lambda architecture a 64-bit little-endian ELF executable is for, or an error string."""
    with open(path, "rb") as f:
        head = f.read(20)
    if len(head) < 20 or head[:4] != b"\x7fELF":
        return None, "not an ELF file"
    if head[4] != 2 or head[5] != 1:
        return None, "not a 64-bit little-endian ELF"
    machine = int.from_bytes(head[18:20], "little")
    if machine not in ELF_MACHINES:
        return None, f"ELF machine {machine:#x}, neither aarch64 nor x86-64"
    return ELF_MACHINES[machine], None


def sha256(path):
    return hashlib.sha256(pathlib.Path(path).read_bytes()).hexdigest()


def load_yaml(path):
    from samcli.yamlhelper import yaml_parse

    return yaml_parse(pathlib.Path(path).read_text())


def sam_functions(build_dir):
    """{logical id: bootstrap path} of every zip function in the built SAM template."""
    template = load_yaml(build_dir / "template.yaml")
    functions = {}
    for logical_id, resource in template.get("Resources", {}).items():
        if resource.get("Type") != "AWS::Serverless::Function":
            continue
        code = resource.get("Properties", {}).get("CodeUri")
        if not isinstance(code, str):
            raise SystemExit(f"{logical_id}: the built template has no local CodeUri ({code!r})")
        functions[logical_id] = (build_dir / code / "bootstrap").resolve()
    return template, functions


def check_sam(args):
    build_dir = pathlib.Path(args.build_dir)
    template_path = build_dir / "template.yaml"
    if not template_path.is_file():
        print(f"no {template_path}: run `sam build` in infra/ first (make sam-build)", file=sys.stderr)
        return 1
    template, functions = sam_functions(build_dir)
    if not functions:
        print(f"{template_path} has no functions", file=sys.stderr)
        return 1
    failures, architectures = [], set()
    print(f"{'function':<28} {'architecture':<12} {'bytes':>10}  sha256")
    for logical_id, bootstrap in sorted(functions.items()):
        if not bootstrap.is_file():
            failures.append(f"{logical_id}: no bootstrap at {bootstrap}")
            continue
        arch, error = elf_architecture(bootstrap)
        size = bootstrap.stat().st_size
        print(f"{logical_id:<28} {arch or '?':<12} {size:>10}  {sha256(bootstrap)[:16]}")
        if error:
            failures.append(f"{logical_id}: {bootstrap} is {error}")
            continue
        architectures.add(arch)
        if args.expect and arch != args.expect:
            failures.append(f"{logical_id}: built for {arch}, expected {args.expect}")
        if size > args.max_bytes:
            failures.append(f"{logical_id}: {size} bytes, over the limit of {args.max_bytes}")
    if len(architectures) > 1:
        failures.append(f"the functions were built for different architectures: {sorted(architectures)}")
    if failures:
        print("\n".join(["", "FAILED:"] + failures), file=sys.stderr)
        return 1
    (arch,) = architectures
    print(f"{len(functions)} functions, all {arch}, each at most {args.max_bytes} bytes")
    if args.pin:
        pin(template_path, template, arch)
    return 0


def pin(template_path, template, arch):
    """Lets the built template's Architecture parameter take only the architecture built."""
    from samcli.yamlhelper import yaml_dump

    parameter = template.get("Parameters", {}).get("Architecture")
    if parameter is None:
        raise SystemExit(f"{template_path} has no Architecture parameter to pin")
    parameter["AllowedValues"] = [arch]
    parameter["Default"] = arch
    parameter["Description"] = (
        f"Lambda architecture. These functions were built for {arch} (sam build); any other value "
        f"is refused: build again with make sam-build ARCH=<value> to change it."
    )
    template_path.write_text(yaml_dump(template))
    print(f"pinned: {template_path} accepts Architecture={arch} only")


def cdk_functions(cdk_out):
    """{logical id: bootstrap path} of every bundled function in the CDK assembly's template."""
    templates = sorted(cdk_out.glob("*.template.json"))
    if len(templates) != 1:
        raise SystemExit(f"expected one stack template in {cdk_out}, found {templates}")
    template = json.loads(templates[0].read_text())
    functions = {}
    for logical_id, resource in template.get("Resources", {}).items():
        if resource.get("Type") != "AWS::Lambda::Function":
            continue
        asset = resource.get("Metadata", {}).get("aws:asset:path")
        if asset is None:
            continue  # an inline function of the CDK's own (log retention, bucket notifications)
        functions[logical_id] = (cdk_out / asset / "bootstrap").resolve()
    return functions


def compare(args):
    _, sam = sam_functions(pathlib.Path(args.build_dir))
    cdk = cdk_functions(pathlib.Path(args.cdk_out))
    failures = []
    if set(sam) != set(cdk):
        failures.append(
            f"different functions: only in SAM {sorted(set(sam) - set(cdk))}, "
            f"only in CDK {sorted(set(cdk) - set(sam))}"
        )
    for logical_id in sorted(set(sam) & set(cdk)):
        if not cdk[logical_id].is_file():
            failures.append(f"{logical_id}: the CDK assembly has no bootstrap at {cdk[logical_id]} (bundling off?)")
            continue
        a, b = sha256(sam[logical_id]), sha256(cdk[logical_id])
        same = "same" if a == b else "DIFFERENT"
        print(f"{logical_id:<28} {same:<9} sam {a[:16]}  cdk {b[:16]}")
        if a != b:
            failures.append(f"{logical_id}: the SAM and CDK bootstraps differ")
    if failures:
        print("\n".join(["", "FAILED:"] + failures), file=sys.stderr)
        return 1
    print(f"{len(sam)} functions: the CDK assembly's bootstraps are the SAM build's, byte for byte")
    return 0


def self_test():
    """The checks on a fake build: each failure they exist for is reported, the pin holds."""
    import tempfile
    from samcli.yamlhelper import yaml_dump

    def elf(machine, size=64, elf_class=2):
        head = b"\x7fELF" + bytes([elf_class, 1, 1]) + bytes(9) + (2).to_bytes(2, "little")
        return head + machine.to_bytes(2, "little") + bytes(size - 20)

    def build(tmp, bootstraps):
        build_dir = pathlib.Path(tmp) / "build"
        template = {
            "Parameters": {"Architecture": {"Type": "String", "AllowedValues": ["arm64", "x86_64"], "Default": "arm64"}},
            "Resources": {},
        }
        for name, content in bootstraps.items():
            (build_dir / name).mkdir(parents=True)
            (build_dir / name / "bootstrap").write_bytes(content)
            template["Resources"][name] = {"Type": "AWS::Serverless::Function", "Properties": {"CodeUri": name}}
        (build_dir / "template.yaml").write_text(yaml_dump(template))
        return build_dir

    def run(bootstraps, expect="arm64", max_bytes=1000, pin_it=True):
        with tempfile.TemporaryDirectory() as tmp:
            build_dir = build(tmp, bootstraps)
            args = argparse.Namespace(build_dir=build_dir, expect=expect, max_bytes=max_bytes, pin=pin_it)
            with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                code = check_sam(args)
            return code, load_yaml(build_dir / "template.yaml")["Parameters"]["Architecture"]

    arm, x86 = elf(0xB7), elf(0x3E)
    code, parameter = run({"A": arm, "B": arm})
    assert code == 0 and parameter["AllowedValues"] == ["arm64"] and parameter["Default"] == "arm64", parameter
    code, parameter = run({"A": x86}, expect="x86_64")
    assert code == 0 and parameter["AllowedValues"] == ["x86_64"], parameter
    cases = {
        "a binary for another architecture than asked": ({"A": x86, "B": x86}, "arm64", 1000),
        "binaries for two architectures": ({"A": arm, "B": x86}, None, 1000),
        "a binary over the size limit": ({"A": elf(0xB7, 2000)}, "arm64", 1000),
        "a file that is not ELF": ({"A": b"#!/bin/sh\necho hi\n" + bytes(40)}, "arm64", 1000),
        "a 32-bit ELF": ({"A": elf(0xB7, elf_class=1)}, "arm64", 1000),
        "an ELF for another machine": ({"A": elf(0x28)}, "arm64", 1000),
    }
    for what, (bootstraps, expect, max_bytes) in cases.items():
        code, parameter = run(bootstraps, expect, max_bytes)
        assert code == 1, f"not refused: {what}"
        assert parameter["AllowedValues"] == ["arm64", "x86_64"], f"pinned despite {what}"
    print(f"self-test: a good build passes and is pinned; {len(cases)} bad builds refused, none pinned")
    return 0


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    build_dir = ROOT / "infra" / ".aws-sam" / "build"
    s = sub.add_parser("sam", help="check (and pin) the SAM build")
    s.add_argument("--build-dir", default=build_dir)
    s.add_argument("--expect", choices=sorted(ELF_MACHINES.values()))
    s.add_argument("--max-bytes", type=int, default=6_000_000)
    s.add_argument("--pin", action="store_true")
    c = sub.add_parser("compare", help="the CDK assembly's bootstraps against the SAM build's")
    c.add_argument("--build-dir", default=build_dir)
    c.add_argument("--cdk-out", default=ROOT / "infra" / "cdk" / "cdk.out")
    sub.add_parser("self-test", help="the checks against fake builds (make test)")
    args = parser.parse_args()
    if args.command == "self-test":
        return self_test()
    return check_sam(args) if args.command == "sam" else compare(args)


if __name__ == "__main__":
    sys.exit(main())
