#!/usr/bin/env python3
"""Compare the SAM stack (infra/template.yaml) with the CDK stack (infra/cdk, synthesized).

The SAM template is transformed to plain CloudFormation offline (cfn-lint's SAM transform, which
runs aws-sam-translator with its bundled managed-policy map), then both templates are normalized
to one comparable structure and compared:

  parameters   names, Type, Default, AllowedValues/AllowedPattern, Min/MaxValue (not Description)
  conditions   every condition's expression (and Mappings, Rules)
  functions    binary (Metadata.BuildProperties.Binary), every property but Code and Role
               (runtime, handler, Architectures, memory, timeout, name, environment variables with
               their values, reserved concurrency, LoggingConfig), and its role: trust principal,
               managed policies, and every IAM statement expanded to (effect, action, resource,
               condition), whether SAM wrote it in the role or CDK in a separate AWS::IAM::Policy;
               a statement that exists only under a CloudFormation condition (SAM: `!If [C,
               statement, !Ref AWS::NoValue]` in the Statement list; CDK: a policy resource with
               `Condition: C`) is marked "if C:"
  api          name, protocol, routes ("ANY /tilby/{token+}" -> function, integration type,
               payload format), the $default stage (throttling), and the invoke permissions
  resources    table, queues, buckets, log groups, event source mapping, alarms, dashboard: every
               property, Condition and DeletionPolicy/UpdateReplacePolicy (absent = Delete); bucket
               policies: their bucket and statements, expanded as a role's (a statement chosen by
               `Fn::If [C, a, b]` comes out as "if C: a" and "if not C: b"); KMS keys: every
               property and their key policy, expanded likewise; key aliases; alarm metric math
               with the returned expression's id normalized; the dashboard body parsed, each
               series with its effective stat, period and axis
  outputs      names, values and descriptions

Intrinsics are rendered to one notation (Ref X and GetAtt X.Y become ${X} and ${X.Y}; Fn::Sub and
Fn::Join become the string they build), so `!Sub "${AWS::StackName}-x"` equals CDK's Fn::Join.
A function's role is named by whose it is ("role of TrybeWebhookFunction"), not by its logical ID
(SAM's `<function>Role`, CDK's `<function>ServiceRole<hash>`), wherever it is referenced: the
processor's TRUSTED_SENDERS (each provider with its receiver's role id) and the bucket policies'
aws:userid compare by whose role they name.
Anything either template has that no rule above accounts for is itself a difference.

Prints a diff (`- sam` / `+ cdk`) and exits 1 on any difference, 0 when the stacks match. With
--self-test it then mutates the CDK template in memory in ways that matter (a route's greedy `+`,
an IAM condition, a timeout, an alarm's actions, two providers' trusted roles swapped, a bucket
readable by anyone, the key usable outside S3, …) and fails unless every mutation is reported.
Run with the project's virtualenv: .venv/bin/python infra/compare_stacks.py [--self-test] [--dump DIR]
"""

from __future__ import annotations

import argparse
import copy
import json
import re
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SAM_TEMPLATE = ROOT / "infra" / "template.yaml"
CDK_TEMPLATE = ROOT / "infra" / "cdk" / "cdk.out" / "WebhookIntake.template.json"

# What only the CDK stack has, on purpose. Printed as notes, never compared.
CDK_ONLY_PARAMETERS = {"BootstrapVersion": "CDK bootstrap version check (the CDK's asset bucket)"}
CDK_ONLY_RULES = {
    "CheckBootstrapVersion": "CDK bootstrap version check",
    "ArchitectureMatchesBuild": "the functions are built at synth for the context `architecture`; "
    "the Architecture parameter may only repeat it",
}
# Tags SAM adds by itself.
SAM_TAGS = {"lambda:createdBy", "httpapi:createdBy"}
DEFAULT_POLICY = "Delete"
NO_VALUE = {"Ref": "AWS::NoValue"}


# ---------------------------------------------------------------- loading


def load_sam(path: Path) -> dict:
    """The SAM template as plain CloudFormation, transformed offline."""
    import logging

    from cfnlint.decode import decode
    from cfnlint.template.transforms._sam import Transform

    logging.getLogger("cfnlint").setLevel(logging.ERROR)
    template, matches = decode(str(path))
    if matches or template is None:
        sys.exit(f"cannot read {path}: {matches}")
    transform = Transform(str(path), template, "us-east-1")
    errors = transform.transform_template()
    if errors:
        sys.exit(f"SAM transform of {path} failed: {errors}")
    # Back to plain JSON types (cfn-lint's decoded nodes subclass dict/str).
    return json.loads(json.dumps(transform.template(), default=str))


def load_cdk(path: Path) -> dict:
    if not path.exists():
        sys.exit(f"{path} does not exist: run `make cdk-synth` first")
    return json.loads(path.read_text())


# ---------------------------------------------------------------- intrinsics


def sub(template: str, variables: dict) -> str:
    def repl(m: re.Match) -> str:
        name = m.group(1)
        if name.startswith("!"):
            return "${" + name[1:] + "}"
        if name in variables:
            return as_text(render(variables[name]))
        return "${" + name + "}"

    return re.sub(r"\$\{([^}]+)\}", repl, template)


def as_text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True)


def render(node: Any) -> Any:
    """Intrinsics to one notation: strings for Ref/GetAtt/Sub/Join, {"If": …} and friends."""
    if isinstance(node, list):
        return [render(x) for x in node]
    if not isinstance(node, dict):
        return node
    if len(node) == 1:
        (key, arg), = node.items()
        if key == "Ref":
            return "${" + arg + "}"
        if key == "Fn::GetAtt":
            return "${" + (arg if isinstance(arg, str) else ".".join(arg)) + "}"
        if key == "Fn::Sub":
            if isinstance(arg, str):
                return sub(arg, {})
            return sub(arg[0], arg[1])
        if key == "Fn::Join":
            separator, parts = arg
            parts = render(parts)
            if isinstance(parts, list):
                return separator.join(as_text(p) for p in parts)
            return {"Join": [separator, parts]}
        if key.startswith("Fn::"):
            return {key[4:]: render(arg)}
        if key == "Condition":
            return {"Condition": arg}
    return {k: render(v) for k, v in node.items()}


def ref_target(value: Any) -> str | None:
    """The logical ID a rendered ${X} or ${X.Arn} names."""
    if isinstance(value, str):
        m = re.fullmatch(r"\$\{([A-Za-z0-9]+)(?:\.Arn)?\}", value)
        if m:
            return m.group(1)
    return None


def partition(arn: Any) -> Any:
    if isinstance(arn, str) and arn.startswith("arn:aws:"):
        return "arn:${AWS::Partition}:" + arn[len("arn:aws:"):]
    return arn


def listify(x: Any) -> list:
    return x if isinstance(x, list) else [x]


def branches(node: Any, when: str | None = None) -> list[tuple[str | None, Any]]:
    """The values an unrendered node may take, each with the condition it takes it under:
    `Fn::If [C, a, b]` is a under C and b under "not C"; `Ref AWS::NoValue` is nothing. So a
    statement written `!If [C, statement, !Ref AWS::NoValue]` (SAM) and the same statement in a
    policy resource with `Condition: C` (CDK) both come out as (C, statement)."""
    if node == NO_VALUE:
        return []
    if isinstance(node, dict) and set(node) == {"Fn::If"}:
        name, then, otherwise = node["Fn::If"]
        both = lambda c: c if when is None else f"{when} and {c}"  # noqa: E731
        return branches(then, both(name)) + branches(otherwise, both(f"not {name}"))
    return [(when, node)]


def policies(resource: dict) -> dict:
    return {
        "DeletionPolicy": resource.get("DeletionPolicy", DEFAULT_POLICY),
        "UpdateReplacePolicy": resource.get("UpdateReplacePolicy", DEFAULT_POLICY),
        **({"Condition": resource["Condition"]} if "Condition" in resource else {}),
    }


def drop_sam_tags(props: dict) -> dict:
    tags = props.get("Tags")
    if isinstance(tags, list):
        kept = [t for t in tags if t.get("Key") not in SAM_TAGS]
        props = {**props, "Tags": kept} if kept else {k: v for k, v in props.items() if k != "Tags"}
    elif isinstance(tags, dict):
        kept = {k: v for k, v in tags.items() if k not in SAM_TAGS}
        props = {**props, "Tags": kept} if kept else {k: v for k, v in props.items() if k != "Tags"}
    return props


# ---------------------------------------------------------------- normalizing


class Normalizer:
    def __init__(self, template: dict, flavor: str):
        self.t = template
        self.flavor = flavor
        self.resources: dict = template.get("Resources", {})
        self.used: set[str] = set()

    def of_type(self, type_: str) -> dict:
        return {k: v for k, v in self.resources.items() if v.get("Type") == type_}

    def use(self, logical_id: str) -> None:
        self.used.add(logical_id)

    # -- IAM

    def statements(self, document: dict, when: str | None = None) -> dict:
        """Every statement expanded to lines "[if C: ]effect action[ by principal][ on resource]
        [ when condition][ with other]"; C is the CloudFormation condition it exists under."""
        out = {}
        conditional = [b for st in listify(document.get("Statement", [])) for b in branches(st, when)]
        for when_, st in conditional:
            st = render(st)
            if not isinstance(st, dict) or "Effect" not in st:
                out[f"unrecognized statement {as_text(st)}" + (f" if {when_}" if when_ else "")] = True
                continue
            effect = st.get("Effect")
            condition = st.get("Condition")
            extra = {
                k: v for k, v in st.items() if k not in ("Effect", "Action", "Resource", "Condition", "Sid", "Principal")
            }
            principal = st.get("Principal")
            for action in listify(st.get("Action", [])):
                # A trust policy names a principal, not a resource.
                for resource in listify(st.get("Resource", [None])):
                    line = f"{effect} {action}"
                    if principal is not None:
                        principals = {k: sorted(listify(v)) for k, v in principal.items()} \
                            if isinstance(principal, dict) else principal
                        line += f" by {as_text(principals)}"
                    if resource is not None:
                        line += f" on {as_text(resource)}"
                    if condition:
                        line += f" when {as_text(condition)}"
                    if extra:
                        line += f" with {as_text(extra)}"
                    if when_:
                        line = f"if {when_}: {line}"
                    out[line] = True
        return out

    def role(self, role_id: str) -> dict:
        role = self.resources[role_id]
        self.use(role_id)
        props = drop_sam_tags(role.get("Properties", {}))
        trust = self.statements(props.get("AssumeRolePolicyDocument", {}))
        statements: dict = {}
        for when, p in (b for p in props.get("Policies", []) for b in branches(p)):
            statements.update(self.statements(p.get("PolicyDocument", {}), when))
        for pid, policy in self.of_type("AWS::IAM::Policy").items():
            pprops = policy.get("Properties", {})
            if any(ref_target(render(r)) == role_id for r in pprops.get("Roles", [])):
                self.use(pid)
                # A policy resource under a condition: its statements exist only under it.
                statements.update(self.statements(pprops.get("PolicyDocument", {}), policy.get("Condition")))
        rest = {
            k: render(v)
            for k, v in props.items()
            if k not in ("AssumeRolePolicyDocument", "Policies", "ManagedPolicyArns")
        }
        return {
            "trust": trust,
            "managed_policies": sorted(partition(render(a)) for a in props.get("ManagedPolicyArns", [])),
            "statements": statements,
            **({"other": rest} if rest else {}),
        }

    # -- functions

    def functions(self) -> dict:
        out = {}
        for fid, fn in self.of_type("AWS::Lambda::Function").items():
            self.use(fid)
            props = drop_sam_tags(dict(fn.get("Properties", {})))
            role_id = ref_target(render(props.pop("Role", None)))
            props.pop("Code", None)
            binary = fn.get("Metadata", {}).get("BuildProperties", {}).get("Binary")
            env = render(props.pop("Environment", {})).get("Variables", {})
            out[fid] = {
                "binary": binary,
                "properties": render(props),
                "environment": env,
                "role": self.role(role_id) if role_id in self.resources else f"unresolved role {role_id}",
                **policies(fn),
            }
        return out

    # -- API

    def api(self) -> dict:
        apis = self.of_type("AWS::ApiGatewayV2::Api")
        out: dict = {}
        for aid, api in apis.items():
            self.use(aid)
            props = dict(api.get("Properties", {}))
            model: dict = {"routes": {}}
            body = props.pop("Body", None)
            if body is not None:  # SAM: an OpenAPI definition
                body = copy.deepcopy(body)
                model["name"] = render(body.pop("info", {}).get("title"))
                model["protocol"] = "HTTP"  # an imported OpenAPI definition makes an HTTP API
                body.pop("openapi", None)
                tags = [t for t in body.pop("tags", []) if t.get("name") not in SAM_TAGS]
                if tags:
                    model["openapi_tags"] = tags
                for path, methods in body.pop("paths", {}).items():
                    for method, op in methods.items():
                        verb = "ANY" if method == "x-amazon-apigateway-any-method" else method.upper()
                        op = dict(op)
                        integ = dict(op.pop("x-amazon-apigateway-integration", {}))
                        op.pop("responses", None)
                        op.pop("parameters", None)  # path parameters, implied by the path
                        route = {
                            "function": self.function_of_uri(render(integ.pop("uri", None))),
                            "integration": str(integ.pop("type", "")).upper(),
                            "payload_format": integ.pop("payloadFormatVersion", None),
                        }
                        integ.pop("httpMethod", None)  # always POST for a Lambda proxy
                        if integ:
                            route["integration_other"] = render(integ)
                        if op:
                            route["other"] = render(op)
                        model["routes"][f"{verb} {path}"] = route
                if body:
                    model["openapi_other"] = render(body)
            else:  # CDK: routes and integrations as resources
                model["name"] = render(props.pop("Name", None))
                model["protocol"] = props.pop("ProtocolType", None)
                for rid, route in self.of_type("AWS::ApiGatewayV2::Route").items():
                    rprops = dict(route["Properties"])
                    if ref_target(render(rprops.pop("ApiId"))) != aid:
                        continue
                    self.use(rid)
                    target = render(rprops.pop("Target", ""))
                    iid = target[len("integrations/"):] if isinstance(target, str) else None
                    iid = ref_target(iid) if iid else None
                    key = rprops.pop("RouteKey")
                    if rprops.get("AuthorizationType") == "NONE":
                        rprops.pop("AuthorizationType")
                    integ = dict(self.resources.get(iid, {}).get("Properties", {}))
                    if iid:
                        self.use(iid)
                    integ.pop("ApiId", None)
                    entry = {
                        "function": self.function_of_uri(render(integ.pop("IntegrationUri", None))),
                        "integration": integ.pop("IntegrationType", None),
                        "payload_format": integ.pop("PayloadFormatVersion", None),
                    }
                    if integ:
                        entry["integration_other"] = render(integ)
                    if rprops:
                        entry["other"] = render(rprops)
                    model["routes"][key] = entry
            if props:
                model["other"] = render(props)
            model["stages"] = self.stages(aid)
            out[aid] = model
        return out

    def function_of_uri(self, uri: Any) -> Any:
        if isinstance(uri, str):
            m = re.search(r"\$\{([A-Za-z0-9]+)\.Arn\}", uri)
            if m:
                return m.group(1)
        return uri

    def stages(self, api_id: str) -> dict:
        out = {}
        for sid, stage in self.of_type("AWS::ApiGatewayV2::Stage").items():
            props = drop_sam_tags(dict(stage.get("Properties", {})))
            if ref_target(render(props.pop("ApiId", None))) != api_id:
                continue
            self.use(sid)
            out[props.pop("StageName", sid)] = {"logical_id": sid, **render(props)}
        return out

    def permissions(self) -> dict:
        out = {}
        for pid, perm in self.of_type("AWS::Lambda::Permission").items():
            self.use(pid)
            props = render(dict(perm.get("Properties", {})))
            fn = ref_target(props.pop("FunctionName", None))
            key = f"{fn} <- {props.pop('Principal', None)} {as_text(props.pop('SourceArn', None))}"
            out[key] = props
        return out

    # -- other resources

    def alarm(self, props: dict) -> dict:
        props = render(props)
        metrics = props.get("Metrics")
        if isinstance(metrics, list):
            queries = []
            for q in metrics:
                q = dict(q)
                if q.get("ReturnData", True) and "Expression" in q:
                    q["Id"] = "(the alarm's expression)"
                queries.append(q)
            props["Metrics"] = {q["Id"]: {k: v for k, v in q.items() if k != "Id"} for q in queries}
        return props

    def dashboard(self, props: dict) -> dict:
        props = dict(props)
        body = render(props.pop("DashboardBody", None))
        out = render(props)
        try:
            parsed = json.loads(body)
        except (TypeError, ValueError) as e:
            out["DashboardBody"] = f"unparsable: {e}: {body!r}"[:500]
            return out
        widgets = []
        for w in parsed.get("widgets", []):
            w = dict(w)
            wp = dict(w.pop("properties", {}))
            stat = wp.pop("stat", "Average")
            period = wp.pop("period", 300)
            series = [self.series(m, stat, period) for m in wp.pop("metrics", [])]
            if wp.get("yAxis") == {}:
                wp.pop("yAxis")
            wp.setdefault("stacked", False)
            wp.setdefault("view", "timeSeries")
            widgets.append({**w, **wp, "series": series})
        out["widgets"] = {f"{i}: {w.get('title')}": w for i, w in enumerate(widgets)}
        return out

    @staticmethod
    def series(metric: list, stat: str, period: int) -> dict:
        opts = dict(metric[-1]) if metric and isinstance(metric[-1], dict) else {}
        fields = metric[:-1] if opts else metric
        opts.setdefault("yAxis", "left")
        if "expression" in opts:
            opts.pop("id", None)  # only matters when another expression names it
            opts.setdefault("period", period)
            return opts
        namespace, name, *dims = fields
        return {
            "namespace": namespace,
            "metric": name,
            "dimensions": dict(zip(dims[::2], dims[1::2])),
            **opts,
            "stat": opts.get("stat", stat),
            "period": opts.get("period", period),
        }

    def bucket_policies(self) -> dict:
        """Each bucket policy by logical ID: its bucket, its statements expanded as a role's are."""
        out = {}
        for pid, policy in self.of_type("AWS::S3::BucketPolicy").items():
            self.use(pid)
            props = dict(policy.get("Properties", {}))
            bucket = render(props.pop("Bucket", None))
            document = dict(props.pop("PolicyDocument", {}))
            statements = self.statements(document)
            document.pop("Statement", None)
            out[pid] = {
                "bucket": ref_target(bucket) or bucket,
                "statements": statements,
                **({"document": render(document)} if document else {}),
                **({"other": render(props)} if props else {}),
                **policies(policy),
            }
        return out

    def keys(self) -> dict:
        """Each KMS key by logical ID: every property, its key policy expanded as a role's is."""
        out = {}
        for kid, key in self.of_type("AWS::KMS::Key").items():
            self.use(kid)
            props = dict(key.get("Properties", {}))
            document = dict(props.pop("KeyPolicy", {}))
            statements = self.statements(document)
            document.pop("Statement", None)
            out[kid] = {
                "policy": statements,
                **({"policy_document": render(document)} if document else {}),
                **render(props),
                **policies(key),
            }
        return out

    def role_names(self) -> dict:
        """Each function's role by its logical ID -> "role of <function>": SAM names a function's
        role `<function>Role`, CDK `<function>ServiceRole<hash>`, and what names a role (a bucket
        policy's aws:userid, the processor's TRUSTED_SENDERS) must compare by whose it is."""
        out = {}
        for fid, fn in self.of_type("AWS::Lambda::Function").items():
            role_id = ref_target(render(fn.get("Properties", {}).get("Role")))
            if role_id:
                out[role_id] = f"role of {fid}"
        return out

    def by_logical_id(self, type_: str) -> dict:
        out = {}
        for rid, res in self.of_type(type_).items():
            self.use(rid)
            props = res.get("Properties", {})
            if type_ == "AWS::CloudWatch::Alarm":
                model = self.alarm(props)
            elif type_ == "AWS::CloudWatch::Dashboard":
                model = self.dashboard(props)
            else:
                model = render(drop_sam_tags(props))
            out[rid] = {**model, **policies(res)}
        return out

    # -- the whole template

    def model(self) -> tuple[dict, dict]:
        t = self.t
        notes: dict = {}
        params = {}
        for name, p in t.get("Parameters", {}).items():
            if self.flavor == "cdk" and name in CDK_ONLY_PARAMETERS:
                notes[f"parameter {name}"] = CDK_ONLY_PARAMETERS[name]
                continue
            params[name] = {k: v for k, v in p.items() if k != "Description"}
            if "Default" in params[name]:
                params[name]["Default"] = str(params[name]["Default"])
            if "AllowedValues" in params[name]:
                params[name]["AllowedValues"] = [str(v) for v in params[name]["AllowedValues"]]
        rules = {}
        for name, r in t.get("Rules", {}).items():
            if self.flavor == "cdk" and name in CDK_ONLY_RULES:
                notes[f"rule {name}"] = CDK_ONLY_RULES[name]
                continue
            rules[name] = render(r)
        model = {
            "parameters": params,
            "rules": rules,
            "conditions": render(t.get("Conditions", {})),
            "mappings": render(t.get("Mappings", {})),
            "functions": self.functions(),
            "api": self.api(),
            "permissions": self.permissions(),
            "tables": self.by_logical_id("AWS::DynamoDB::Table"),
            "queues": self.by_logical_id("AWS::SQS::Queue"),
            "log_groups": self.by_logical_id("AWS::Logs::LogGroup"),
            "event_source_mappings": self.by_logical_id("AWS::Lambda::EventSourceMapping"),
            "buckets": self.by_logical_id("AWS::S3::Bucket"),
            "bucket_policies": self.bucket_policies(),
            "keys": self.keys(),
            "key_aliases": self.by_logical_id("AWS::KMS::Alias"),
            "alarms": self.by_logical_id("AWS::CloudWatch::Alarm"),
            "dashboards": self.by_logical_id("AWS::CloudWatch::Dashboard"),
            "outputs": render(t.get("Outputs", {})),
        }
        left = {
            rid: res.get("Type") for rid, res in self.resources.items() if rid not in self.used
        }
        model["unaccounted_resources"] = left
        # References to a function's role, by whose role it is (role_names).
        text = json.dumps(model)
        for role_id, name in self.role_names().items():
            text = re.sub(r"\$\{" + re.escape(role_id) + r"([.}])", lambda m: "${" + name + m.group(1), text)
        return json.loads(text), notes


# ---------------------------------------------------------------- diffing


def flatten(node: Any, path: str = "") -> dict:
    if isinstance(node, dict) and node:
        out = {}
        for k, v in node.items():
            out.update(flatten(v, f"{path}/{k}" if path else str(k)))
        return out
    if isinstance(node, list) and node and any(isinstance(x, (dict, list)) for x in node):
        out = {}
        for i, v in enumerate(node):
            out.update(flatten(v, f"{path}[{i}]"))
        return out
    return {path: node}


def diff(sam: dict, cdk: dict) -> list[str]:
    a, b = flatten(sam), flatten(cdk)
    lines = []
    for key in sorted(set(a) | set(b)):
        if key in a and key in b:
            if a[key] != b[key]:
                lines.append(f"  {key}\n    - sam: {as_text(a[key])}\n    + cdk: {as_text(b[key])}")
        elif key in a:
            lines.append(f"  {key}\n    - sam: {as_text(a[key])}\n    + cdk: (missing)")
        else:
            lines.append(f"  {key}\n    - sam: (missing)\n    + cdk: {as_text(b[key])}")
    return lines


# ---------------------------------------------------------------- self-test


def _resources(t: dict, type_: str) -> list[dict]:
    return [r for r in t["Resources"].values() if r["Type"] == type_]


def _statements(t: dict) -> list[dict]:
    return [st for p in _resources(t, "AWS::IAM::Policy") for st in p["Properties"]["PolicyDocument"]["Statement"]]


def _drop_processor_condition(t: dict) -> None:
    for st in _statements(t):
        if "processed#*" in json.dumps(st.get("Condition", {})):
            del st["Condition"]
            return
    raise AssertionError("no statement with processed#*")


def _ungreedy_route(t: dict) -> None:
    route = next(r for r in _resources(t, "AWS::ApiGatewayV2::Route") if "+}" in r["Properties"]["RouteKey"])
    route["Properties"]["RouteKey"] = route["Properties"]["RouteKey"].replace("+}", "}")


def _set(type_: str, key: str, value: Any, index: int = 0):
    def mutate(t: dict) -> None:
        props = _resources(t, type_)[index]["Properties"]
        *parents, last = key.split(".")
        for k in parents:
            props = props[k]
        if value is None:
            del props[last]
        else:
            props[last] = value
    return mutate


def _widen_secret(t: dict) -> None:
    st = next(st for st in _statements(t) if st["Action"] == "secretsmanager:GetSecretValue"
              or st["Action"] == ["secretsmanager:GetSecretValue"])
    st["Resource"] = "*"


def _rename_dashboard_metric(t: dict) -> None:
    body = _resources(t, "AWS::CloudWatch::Dashboard")[0]["Properties"]["DashboardBody"]
    parts = body["Fn::Join"][1]
    i = next(i for i, p in enumerate(parts) if isinstance(p, str) and "ClaimLatency" in p)
    parts[i] = parts[i].replace("ClaimLatency", "ClaimLatencies")


def _add_role_action(t: dict) -> None:
    policy = _resources(t, "AWS::IAM::Policy")[0]
    policy["Properties"]["PolicyDocument"]["Statement"].append(
        {"Action": "sqs:PurgeQueue", "Effect": "Allow", "Resource": "*"}
    )


def _statement_with(t: dict, *needles: str) -> dict:
    return next(st for st in _statements(t) if all(n in json.dumps(st) for n in needles))


def _unconditional_archive_policy(t: dict) -> None:
    policy = next(r for r in _resources(t, "AWS::IAM::Policy") if r.get("Condition") == "ArchiveOn")
    del policy["Condition"]


def _payload_put_on_whole_bucket(t: dict) -> None:
    st = _statement_with(t, "s3:PutObject", "PayloadBucket")
    st["Resource"] = {"Fn::Join": ["", ["arn:", {"Ref": "AWS::Partition"}, ":s3:::", {"Ref": "PayloadBucket"}, "/*"]]}


def _archive_put_under_other_prefix(t: dict) -> None:
    st = _statement_with(t, "s3:PutObject", "ArchiveBucket", "/trybe/*")
    st["Resource"] = json.loads(json.dumps(st["Resource"]).replace("/trybe/*", "/tilby/*"))


def _processor_puts_payloads(t: dict) -> None:
    st = _statement_with(t, "s3:GetObject")
    st["Action"] = ["s3:GetObject", "s3:PutObject"]


def _unconditional_archive_bucket(t: dict) -> None:
    bucket = next(r for r in _resources(t, "AWS::S3::Bucket") if r.get("Condition") == "ArchiveOn")
    del bucket["Condition"]


def _fixed_payload_retention(t: dict) -> None:
    bucket = t["Resources"]["PayloadBucket"]["Properties"]
    bucket["LifecycleConfiguration"]["Rules"][0]["ExpirationInDays"] = 29


def _bucket_policy_allows_plain_http(t: dict) -> None:
    document = _resources(t, "AWS::S3::BucketPolicy")[0]["Properties"]["PolicyDocument"]
    document["Statement"] = [st for st in document["Statement"] if "aws:SecureTransport" not in json.dumps(st)]


def _bucket_policy_accepts_any_encryption(t: dict) -> None:
    document = _resources(t, "AWS::S3::BucketPolicy")[-1]["Properties"]["PolicyDocument"]
    st = next(st for st in document["Statement"] if "s3:x-amz-server-side-encryption" in json.dumps(st))
    st["Condition"] = {"Null": {"s3:x-amz-server-side-encryption": "true"}}


def _processor_env(t: dict) -> dict:
    return t["Resources"]["EventProcessorFunction"]["Properties"]["Environment"]["Variables"]


def _swap_trusted_senders(t: dict) -> None:
    """tribe's entry names trybe's role (and trybe's tribe's): same roles, wrong providers."""
    entries = _processor_env(t)["TRUSTED_SENDERS"]["Fn::Join"][1]
    first, second = entries[0]["Fn::Join"][1], entries[1]["Fn::Join"][1]
    first[1], second[1] = second[1], first[1]


def _processor_sends_to_the_queue(t: dict) -> None:
    st = _statement_with(t, "sqs:SendMessage", "EventsDeadLetterQueue")
    st["Resource"] = {"Fn::GetAtt": ["EventsQueue", "Arn"]}


def _unconditional_key_statement(t: dict) -> None:
    policy = next(r for r in _resources(t, "AWS::IAM::Policy") if r.get("Condition") == "ObjectsKeyOn"
                  and "kms:GenerateDataKey" in json.dumps(r))
    del policy["Condition"]


def _key_policy(t: dict) -> list:
    return t["Resources"]["ObjectsKey"]["Properties"]["KeyPolicy"]["Statement"]


def _key_usable_outside_s3(t: dict) -> None:
    t["Resources"]["ObjectsKey"]["Properties"]["KeyPolicy"]["Statement"] = [
        st for st in _key_policy(t) if "kms:ViaService" not in json.dumps(st)
    ]


def _key_trusts_anyone(t: dict) -> None:
    st = next(st for st in _key_policy(t) if st["Effect"] == "Allow")
    st["Principal"] = {"AWS": "*"}


def _bucket_policy_statement(t: dict, bucket: str, sid: str) -> tuple[list, int]:
    statements = t["Resources"][f"{bucket}Policy"]["Properties"]["PolicyDocument"]["Statement"]
    i = next(i for i, st in enumerate(statements) if sid in json.dumps(st))
    return statements, i


def _payload_readable_by_anyone_with_operators(t: dict) -> None:
    statements, i = _bucket_policy_statement(t, "PayloadBucket", "DenyReadsByOthers")
    statements[i]["Fn::If"][1] = NO_VALUE


def _archive_readable_by_anyone_without_operators(t: dict) -> None:
    statements, i = _bucket_policy_statement(t, "ArchiveBucket", "DenyReadsByOthers")
    statements[i]["Fn::If"][2] = NO_VALUE


def _archive_readable_by_the_processor(t: dict) -> None:
    statements, i = _bucket_policy_statement(t, "ArchiveBucket", "DenyReadsByOthers")
    userids = statements[i]["Fn::If"][1]["Condition"]["StringNotLike"]["aws:userid"]
    processor = t["Resources"]["EventProcessorFunction"]["Properties"]["Role"]["Fn::GetAtt"][0]
    userids["Fn::Split"][1]["Fn::Join"][1][0:0] = [{"Fn::GetAtt": [processor, "RoleId"]}, ":*,"]


def _any_key_accepted(t: dict) -> None:
    statements, i = _bucket_policy_statement(t, "PayloadBucket", "DenyOtherKeys")
    del statements[i]


def _bucket_stays_sse_s3(t: dict) -> None:
    rules = t["Resources"]["ArchiveBucket"]["Properties"]["BucketEncryption"]["ServerSideEncryptionConfiguration"]
    rules[0]["Fn::If"][1] = rules[0]["Fn::If"][2]


def _refused_alarm_per_provider(t: dict) -> None:
    props = t["Resources"]["RefusedMessageAlarm"]["Properties"]
    props["Dimensions"] = [{"Name": "Provider", "Value": "trybe"}]


MUTATIONS = {
    "a token route loses its greedy +": _ungreedy_route,
    "the processor's dynamodb:LeadingKeys condition is dropped": _drop_processor_condition,
    "a secret statement's resource becomes *": _widen_secret,
    "an IAM policy gains sqs:PurgeQueue on *": _add_role_action,
    "a function's Timeout changes": _set("AWS::Lambda::Function", "Timeout", 9),
    "a function loses EVENTS_TABLE": _set("AWS::Lambda::Function", "Environment.Variables.EVENTS_TABLE", None),
    "a function loses its reserved concurrency": _set("AWS::Lambda::Function", "ReservedConcurrentExecutions", None),
    "the queue's visibility timeout changes": _set("AWS::SQS::Queue", "VisibilityTimeout", 300, index=1),
    "the table loses point-in-time recovery": _set("AWS::DynamoDB::Table", "PointInTimeRecoverySpecification", None),
    "the mapping's batch size changes": _set("AWS::Lambda::EventSourceMapping", "BatchSize", 5),
    "the stage loses its throttling": _set("AWS::ApiGatewayV2::Stage", "DefaultRouteSettings", None),
    "a log group's retention is fixed": _set("AWS::Logs::LogGroup", "RetentionInDays", 30),
    "an alarm loses its actions": _set("AWS::CloudWatch::Alarm", "AlarmActions", None),
    "an alarm's period changes": _set("AWS::CloudWatch::Alarm", "Period", 300),
    "a dashboard series names another metric": _rename_dashboard_metric,
    "a receiver's archive statement loses its condition": _unconditional_archive_policy,
    "a receiver may put payloads anywhere in the bucket": _payload_put_on_whole_bucket,
    "a receiver may archive under another provider's prefix": _archive_put_under_other_prefix,
    "the processor may put payloads": _processor_puts_payloads,
    "the archive bucket is created unconditionally": _unconditional_archive_bucket,
    "the payload retention is fixed": _fixed_payload_retention,
    "a bucket loses its public access block": _set("AWS::S3::Bucket", "PublicAccessBlockConfiguration", None),
    "a bucket loses its encryption": _set("AWS::S3::Bucket", "BucketEncryption", None, index=1),
    "a bucket's DeletionPolicy is dropped": lambda t: _resources(t, "AWS::S3::Bucket")[0].pop("DeletionPolicy"),
    "a bucket policy accepts plain HTTP": _bucket_policy_allows_plain_http,
    "a bucket policy accepts any encryption header": _bucket_policy_accepts_any_encryption,
    "TRUSTED_SENDERS gives two providers each other's roles": _swap_trusted_senders,
    "the processor loses OPERATOR_SENDERS": lambda t: _processor_env(t).pop("OPERATOR_SENDERS"),
    "the processor loses DEAD_LETTER_QUEUE_URL": lambda t: _processor_env(t).pop("DEAD_LETTER_QUEUE_URL"),
    "the processor may send to the events queue, not the dead-letter queue": _processor_sends_to_the_queue,
    "a receiver's kms:GenerateDataKey loses its ObjectsKeyOn condition": _unconditional_key_statement,
    "the key loses its rotation": lambda t: t["Resources"]["ObjectsKey"]["Properties"].pop("EnableKeyRotation"),
    "the key is not retained": lambda t: t["Resources"]["ObjectsKey"].pop("DeletionPolicy"),
    "the key may be used outside S3": _key_usable_outside_s3,
    "the key policy trusts any account": _key_trusts_anyone,
    "with operators, anyone may read the payload bucket": _payload_readable_by_anyone_with_operators,
    "without operators, anyone may read the archive": _archive_readable_by_anyone_without_operators,
    "the processor may read the archive": _archive_readable_by_the_processor,
    "a put may name any KMS key": _any_key_accepted,
    "the archive bucket stays SSE-S3 with the key on": _bucket_stays_sse_s3,
    "the refused alarm watches one provider": _refused_alarm_per_provider,
    "the refused alarm's threshold changes": lambda t: t["Resources"]["RefusedMessageAlarm"]["Properties"].update(Threshold=1),
    "the operators parameter gets a default": lambda t: t["Parameters"]["OperatorPrincipalIds"].update(Default="AROAEXAMPLE"),
    "the key parameter defaults to create": lambda t: t["Parameters"]["BucketEncryptionKey"].update(Default="create"),
}


def self_test(sam: dict, cdk_template: dict) -> int:
    """Each mutation of the CDK template must be reported: the comparison is not vacuous."""
    missed = []
    for what, mutate in MUTATIONS.items():
        mutated = copy.deepcopy(cdk_template)
        mutate(mutated)
        model, _ = Normalizer(mutated, "cdk").model()
        if not any(diff({k: sam[k]}, {k: model.get(k)}) for k in sam):
            missed.append(what)
    for what in missed:
        print(f"self-test: NOT DETECTED: {what}")
    print(f"self-test: {len(MUTATIONS) - len(missed)} of {len(MUTATIONS)} mutations of the CDK template detected")
    return 1 if missed else 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sam", type=Path, default=SAM_TEMPLATE)
    ap.add_argument("--cdk", type=Path, default=CDK_TEMPLATE)
    ap.add_argument("--dump", type=Path, help="write both normalized models (sam.json, cdk.json) into this folder")
    ap.add_argument("--self-test", action="store_true",
                    help="also check that mutations of the CDK template are each reported")
    args = ap.parse_args()

    sam, _ = Normalizer(load_sam(args.sam), "sam").model()
    cdk_template = load_cdk(args.cdk)
    cdk, notes = Normalizer(copy.deepcopy(cdk_template), "cdk").model()
    if args.dump:
        args.dump.mkdir(parents=True, exist_ok=True)
        (args.dump / "sam.json").write_text(json.dumps(sam, indent=2, sort_keys=True))
        (args.dump / "cdk.json").write_text(json.dumps(cdk, indent=2, sort_keys=True))

    failed = 0
    for section in sam:
        lines = diff({section: sam[section]}, {section: cdk.get(section)})
        count = lambda m: len([v for v in flatten(m.get(section) or {}).values() if v != {}])  # noqa: E731
        if lines:
            failed += len(lines)
            print(f"DIFF {section}: {len(lines)} difference(s)")
            print("\n".join(lines))
        else:
            print(f"ok   {section} ({count(sam)} values)")
    for what, why in notes.items():
        print(f"note CDK only, on purpose: {what}: {why}")
    if failed:
        print(f"\nFAIL: the CDK stack differs from the SAM template in {failed} place(s) "
              f"({args.sam.relative_to(ROOT) if args.sam.is_relative_to(ROOT) else args.sam} vs "
              f"{args.cdk.relative_to(ROOT) if args.cdk.is_relative_to(ROOT) else args.cdk})")
        return 1
    print("\nOK: the CDK stack and the SAM template match")
    return self_test(sam, cdk_template) if args.self_test else 0


if __name__ == "__main__":
    sys.exit(main())
