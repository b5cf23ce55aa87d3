//! Problems found in policy store files, located by file, line and column.
//!
//! Cedar reports errors as `miette` diagnostics whose labels are byte spans into the text that was
//! parsed; this module turns them into `file:line:col: message` records that a security engineer
//! can jump to. It does not decide what is an error; the loader does.

use std::fmt;

use serde::Serialize;

/// One problem in one file of a policy store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Diagnostic {
    /// File name relative to the store folder (e.g. `teams.cedar`).
    pub file: String,
    /// 1-based line, when the problem has a location.
    pub line: Option<u32>,
    /// 1-based column (in characters), when the problem has a location.
    pub column: Option<u32>,
    /// The policy concerned, when there is one.
    pub policy_id: Option<String>,
    /// What is wrong, with Cedar's help text when it gives one.
    pub message: String,
}

impl Diagnostic {
    /// A problem in `file` at byte `offset` of its `text`.
    pub(crate) fn at(file: &str, text: &str, offset: Option<usize>, message: String) -> Self {
        let (line, column) = match offset {
            Some(offset) => {
                let (line, column) = line_column(text, offset);
                (Some(line), Some(column))
            }
            None => (None, None),
        };
        Self {
            file: file.to_owned(),
            line,
            column,
            policy_id: None,
            message,
        }
    }

    /// Attach the id of the policy the problem is in.
    pub(crate) fn in_policy(mut self, policy_id: impl Into<String>) -> Self {
        self.policy_id = Some(policy_id.into());
        self
    }

    /// Turn a Cedar diagnostic into records, one per related error when Cedar groups several.
    pub(crate) fn from_miette(
        file: &str,
        text: &str,
        diagnostic: &dyn miette::Diagnostic,
    ) -> Vec<Self> {
        let related: Vec<&dyn miette::Diagnostic> = diagnostic
            .related()
            .map(|it| it.collect())
            .unwrap_or_default();
        if related.is_empty() {
            vec![Self::single(file, text, diagnostic)]
        } else {
            related
                .into_iter()
                .map(|d| Self::single(file, text, d))
                .collect()
        }
    }

    fn single(file: &str, text: &str, diagnostic: &dyn miette::Diagnostic) -> Self {
        let offset = diagnostic
            .labels()
            .and_then(|mut labels| labels.next())
            .map(|label| label.offset());
        let mut message = diagnostic.to_string();
        if let Some(help) = diagnostic.help() {
            message.push_str(" (");
            message.push_str(&help.to_string());
            message.push(')');
        }
        Self::at(file, text, offset, message)
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file)?;
        if let (Some(line), Some(column)) = (self.line, self.column) {
            write!(f, ":{line}:{column}")?;
        }
        write!(f, ": ")?;
        if let Some(id) = &self.policy_id {
            write!(f, "policy `{id}`: ")?;
        }
        write!(f, "{}", self.message)
    }
}

/// 1-based line and column (in characters) of byte `offset` in `text`, clamped to the text.
fn line_column(text: &str, offset: usize) -> (u32, u32) {
    let mut end = offset.min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let before = &text[..end];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before[line_start..].chars().count() + 1;
    (
        u32::try_from(line).unwrap_or(u32::MAX),
        u32::try_from(column).unwrap_or(u32::MAX),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_and_column_are_one_based_and_count_characters() {
        let text = "ab\ncdé\nfg";
        assert_eq!(line_column(text, 0), (1, 1));
        assert_eq!(line_column(text, 3), (2, 1));
        assert_eq!(line_column(text, 5), (2, 3));
        // Past the é (two bytes) the column counts one character.
        assert_eq!(line_column(text, 7), (2, 4));
        assert_eq!(line_column(text, 8), (3, 1));
        assert_eq!(line_column(text, 999), (3, 3));
    }

    #[test]
    fn display_names_file_line_and_policy() {
        let d = Diagnostic::at("teams.cedar", "x\ny", Some(2), "boom".into()).in_policy("team.x");
        assert_eq!(d.to_string(), "teams.cedar:2:1: policy `team.x`: boom");
    }
}
