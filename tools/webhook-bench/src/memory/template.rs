//! Each function's `MemorySize` in the SAM template (infra/template.yaml): `Globals: Function:
//! MemorySize`, overridden by a function's own `Properties: MemorySize`. Read line by line, by
//! indentation: the template's CloudFormation tags (`!Ref`, `!If`, `!Sub`) are not YAML that a
//! library reads without a schema for them, and only a handful of keys matter here.

use std::collections::BTreeMap;
use std::path::Path;

/// A `MemorySize` as written, with its line (1-based), for the error when it is not a number.
#[derive(Debug, Clone, PartialEq)]
struct Raw {
    line: usize,
    text: String,
}

impl Raw {
    fn megabytes(&self, what: &str) -> Result<u64, String> {
        self.text.parse().ok().filter(|mb| *mb > 0).ok_or_else(|| {
            format!(
                "infra/template.yaml line {}: {what} MemorySize is `{}`, not a number of MB \
                     (a parameter or a condition cannot be read here): pass --limit-mb",
                self.line, self.text
            )
        })
    }
}

#[derive(Debug, Default)]
struct Resource {
    serverless_function: bool,
    binary: Option<String>,
    memory: Option<Raw>,
}

/// The memory sizes a template gives its functions.
#[derive(Debug, Default)]
pub struct MemorySizes {
    global: Option<Raw>,
    /// Binary (`Metadata: BuildProperties: Binary`) → that function's own `MemorySize`, if any.
    functions: BTreeMap<String, Option<Raw>>,
}

impl MemorySizes {
    pub fn read(path: &Path) -> Result<MemorySizes, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(parse(&text))
    }

    /// The MemorySize (MB) of the function built as `binary`: its own, else the global one.
    pub fn of(&self, binary: &str) -> Result<u64, String> {
        let own = self.functions.get(binary).ok_or_else(|| {
            format!("infra/template.yaml has no AWS::Serverless::Function built as {binary}")
        })?;
        match (own, &self.global) {
            (Some(raw), _) => raw.megabytes(binary),
            (None, Some(raw)) => raw.megabytes("Globals: Function:"),
            (None, None) => Err(format!(
                "infra/template.yaml gives {binary} no MemorySize (nor Globals): Lambda's \
                 default is 128; pass --limit-mb"
            )),
        }
    }

    /// Binaries of the template's functions, sorted.
    #[cfg(test)]
    pub fn binaries(&self) -> Vec<&str> {
        self.functions.keys().map(String::as_str).collect()
    }
}

/// `key: value` of a line's content, the key unquoted; `None` when the content is no mapping
/// entry (a scalar, a flow collection's continuation).
fn entry(content: &str) -> Option<(&str, &str)> {
    let mut from = 0;
    loop {
        let at = from + content[from..].find(':')?;
        let rest = &content[at + 1..];
        if rest.is_empty() || rest.starts_with([' ', '\t']) {
            let key = content[..at].trim().trim_matches(['"', '\'']);
            if key.is_empty() || key.starts_with(['{', '[', '!', '&', '*']) {
                return None;
            }
            return Some((key, rest.trim()));
        }
        from = at + 1;
    }
}

/// The line without its comment: a `#` at the start or after whitespace, outside quotes.
fn strip_comment(line: &str) -> &str {
    let (mut single, mut double) = (false, false);
    let mut previous = ' ';
    for (i, c) in line.char_indices() {
        match c {
            '\'' if !double => single = !single,
            '"' if !single => double = !double,
            '#' if !single && !double && previous.is_whitespace() => return &line[..i],
            _ => {}
        }
        previous = c;
    }
    line
}

/// A scalar value: quotes removed.
fn scalar(value: &str) -> String {
    value.trim().trim_matches(['"', '\'']).to_owned()
}

/// Whether a value starts a block scalar (`|`, `>`, with chomping or indentation indicators),
/// possibly after a tag (`!Sub |`).
fn starts_block(value: &str) -> bool {
    let value = value.trim();
    let value = match value.strip_prefix('!') {
        Some(tagged) => tagged.split_once(' ').map_or("", |(_, v)| v.trim()),
        None => value,
    };
    value.starts_with(['|', '>'])
        && value[1..]
            .chars()
            .all(|c| matches!(c, '+' | '-' | '1'..='9'))
}

pub(super) fn parse(text: &str) -> MemorySizes {
    let mut global = None;
    let mut resources: BTreeMap<String, Resource> = BTreeMap::new();
    // (indentation, key) of the mappings that enclose the current line; "-" for a list item.
    let mut stack: Vec<(usize, String)> = Vec::new();
    // Inside a block scalar started by a line of this indentation: its lines are text.
    let mut block: Option<usize> = None;
    for (number, raw) in text.lines().enumerate() {
        let line = strip_comment(raw).trim_end();
        if line.trim().is_empty() || line.trim_start().starts_with("---") {
            continue;
        }
        let indent = line.len() - line.trim_start().len();
        match block {
            Some(b) if indent > b => continue,
            _ => block = None,
        }
        while stack.last().is_some_and(|(i, _)| *i >= indent) {
            stack.pop();
        }
        let mut content = line.trim_start();
        let mut indent = indent;
        // A list item: "- key: value" opens a mapping inside the item, two columns further in.
        while let Some(item) = content
            .strip_prefix("- ")
            .or(content.strip_prefix('-').filter(|r| r.is_empty()))
        {
            stack.push((indent, "-".into()));
            indent += 2;
            content = item.trim_start();
        }
        let Some((key, value)) = entry(content) else {
            if starts_block(content) {
                block = Some(indent);
            }
            continue;
        };
        if starts_block(value) {
            block = Some(indent);
        }
        let path: Vec<&str> = stack.iter().map(|(_, k)| k.as_str()).collect();
        let raw = || Raw {
            line: number + 1,
            text: scalar(value),
        };
        match (path.as_slice(), key) {
            (["Globals", "Function"], "MemorySize") => global = Some(raw()),
            (["Resources", name], "Type") => {
                resources
                    .entry(name.to_string())
                    .or_default()
                    .serverless_function = scalar(value) == "AWS::Serverless::Function";
            }
            (["Resources", name, "Metadata", "BuildProperties"], "Binary") => {
                resources.entry(name.to_string()).or_default().binary = Some(scalar(value));
            }
            (["Resources", name, "Properties"], "MemorySize") => {
                resources.entry(name.to_string()).or_default().memory = Some(raw());
            }
            _ => {}
        }
        stack.push((indent, key.to_owned()));
    }
    let functions = resources
        .into_values()
        .filter(|r| r.serverless_function)
        .filter_map(|r| Some((r.binary?, r.memory)))
        .collect();
    MemorySizes { global, functions }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_real_template_gives_every_function_its_memory_size() {
        let sizes = MemorySizes::read(&crate::setup::root().join("infra/template.yaml")).unwrap();
        let mut functions = crate::functions();
        functions.sort();
        assert_eq!(
            sizes.binaries(),
            functions,
            "one template function per crate"
        );
        for f in &functions {
            // Globals: Function: MemorySize: 256 for the receivers; the processor sets its own.
            let expected = if f == "event-processor" { 128 } else { 256 };
            assert_eq!(sizes.of(f).unwrap(), expected, "{f}");
        }
        assert!(sizes.of("no-such-function").is_err());
    }

    #[test]
    fn a_functions_own_memory_size_wins_and_block_scalars_comments_and_tags_are_skipped() {
        let template = r#"
Parameters:
  MemorySize:            # a parameter of that name is not the function's
    Type: Number
Globals:
  Function:
    Runtime: provided.al2023   # MemorySize: 1 in a comment
    MemorySize: 512
Resources:
  Big:
    Type: AWS::Serverless::Function
    Metadata:
      BuildProperties:
        Binary: big-fn
    Properties:
      Description: |
        MemorySize: 7
        Binary: nope
      MemorySize: "1024"
      Policies:
        - Statement:
            - Effect: Allow
              Resource: !Sub "arn:${AWS::Partition}:s3:::bucket/trybe#*"
  Small:
    Type: "AWS::Serverless::Function"
    Metadata: {BuildMethod: rust-cargolambda}
    Properties:
      Environment:
        Variables:
          MemorySize: 3
  Small2:
    Metadata:
      BuildProperties:
        Binary: small-fn
    Type: AWS::Serverless::Function
    Properties:
      Handler: bootstrap
  Tagged:
    Type: AWS::Serverless::Function
    Metadata:
      BuildProperties:
        Binary: tagged-fn
    Properties:
      MemorySize: !Ref FunctionMemory
  Queue:
    Type: AWS::SQS::Queue
    Metadata:
      BuildProperties:
        Binary: not-a-function
"#;
        let sizes = parse(template);
        assert_eq!(sizes.binaries(), ["big-fn", "small-fn", "tagged-fn"]);
        assert_eq!(sizes.of("big-fn").unwrap(), 1024);
        assert_eq!(sizes.of("small-fn").unwrap(), 512);
        let tagged = sizes.of("tagged-fn").unwrap_err();
        assert!(
            tagged.contains("!Ref FunctionMemory") && tagged.contains("--limit-mb"),
            "{tagged}"
        );
        let none = parse("Resources:\n  F:\n    Type: AWS::Serverless::Function\n    Metadata:\n      BuildProperties:\n        Binary: f\n");
        assert!(none.of("f").unwrap_err().contains("128"));
    }

    #[test]
    fn entries_and_comments() {
        assert_eq!(entry("MemorySize: 256"), Some(("MemorySize", "256")));
        assert_eq!(entry("Resources:"), Some(("Resources", "")));
        assert_eq!(entry("\"Quoted\": x"), Some(("Quoted", "x")));
        assert_eq!(
            entry("Resource: arn:aws:s3:::b/*"),
            Some(("Resource", "arn:aws:s3:::b/*"))
        );
        assert_eq!(entry("just text"), None);
        assert_eq!(entry("{a: b}"), None);
        assert_eq!(strip_comment("a: 'x # y' # z"), "a: 'x # y' ");
        assert_eq!(strip_comment("a: trybe#*"), "a: trybe#*");
        assert!(starts_block("|") && starts_block(">-") && starts_block("!Sub |"));
        assert!(!starts_block("a|b") && !starts_block("!Ref X"));
    }
}
