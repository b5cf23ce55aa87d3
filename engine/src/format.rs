//! Canonical formatting of policy files with Cedar's own formatter, for `policy fmt`. It changes
//! layout only, never meaning; comments are kept.

use cedar_policy_formatter::{Config, policies_str_to_pretty};

use crate::policy_store::Diagnostic;

/// Line width of formatted policies.
const LINE_WIDTH: usize = 100;

/// The canonical layout of policy file `name` with text `text`.
pub fn format_policies(name: &str, text: &str) -> Result<String, Vec<Diagnostic>> {
    let config = Config {
        line_width: LINE_WIDTH,
        indent_width: 2,
    };
    policies_str_to_pretty(text, &config).map_err(|report| {
        let diagnostic: &dyn miette::Diagnostic = report.as_ref();
        Diagnostic::from_miette(name, text, diagnostic)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_layout_and_keeps_comments() {
        let text = "// keep me\npermit(principal,action,resource) when {   true };";
        let formatted = format_policies("a.cedar", text).unwrap();
        assert!(formatted.contains("// keep me"));
        assert!(
            formatted.contains("permit (principal, action, resource)"),
            "{formatted}"
        );
        assert_eq!(format_policies("a.cedar", &formatted).unwrap(), formatted);
    }

    #[test]
    fn syntax_errors_are_located() {
        let err = format_policies("a.cedar", "permit(principal,\n action resource);").unwrap_err();
        assert_eq!(err[0].file, "a.cedar");
        assert!(err[0].line.is_some());
    }
}
