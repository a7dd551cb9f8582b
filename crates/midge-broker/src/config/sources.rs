//! Where the values of a [`Config`] were read, beside it: what `midge audit` needs to name
//! the line to change, and the lines the broker reads but refuses or ignores (`psk_file`,
//! `plugin`, `bind_interface`, `psk_hint`, `tls_version tlsv1.1`, ...), each in the section
//! the broker's scoping puts it in. The parser decides the scoping once, for the broker and
//! for audit alike; the broker itself never looks here. Kept out of [`Config`] so that two
//! configurations that mean the same compare equal (a reload compares them) wherever their
//! lines are.
use super::lex::Directive;
use super::Config;

/// The part of a configuration a line sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Section {
    /// The broker as a whole, and the global security settings.
    General,
    /// A listener, by its index in [`Config::listeners`]: its options and, with
    /// `per_listener_settings true`, its own security settings.
    Listener(usize),
}

/// The lines a configuration was read from, by section.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sources {
    /// The line that opened each listener of [`Config::listeners`], by index: its
    /// `listener` line, or for mosquitto's default listener the first line that opened it.
    pub(super) listeners: Vec<Directive>,
    /// Every other line whose value was read (those midge refuses for lacking what they ask
    /// for too, see [`super::LineError::is_unsupported`]), in file order. A line whose value
    /// cannot be read is not here: it set nothing.
    pub(super) lines: Vec<(Section, Directive)>,
}

impl Sources {
    /// The line that opened listener `index`.
    pub fn listener(&self, index: usize) -> Option<&Directive> {
        self.listeners.get(index)
    }

    /// The last `option` line of `section`: the one in force.
    pub fn last(&self, section: Section, option: &str) -> Option<&Directive> {
        self.lines.iter().rev().find(|(s, d)| *s == section && d.name == option).map(|(_, d)| d)
    }

    /// Every line with its section, in file order.
    pub fn iter(&self) -> impl Iterator<Item = (Section, &Directive)> {
        self.lines.iter().map(|(s, d)| (*s, d))
    }

    /// Every `option` line of `section`, in file order.
    pub fn all<'a>(&'a self, section: Section, option: &'a str) -> impl Iterator<Item = &'a Directive> + 'a {
        self.lines.iter().filter(move |(s, d)| *s == section && d.name == option).map(|(_, d)| d)
    }
}

impl Config {
    /// The section whose security lines listener `index` uses: its own with
    /// `per_listener_settings true`, the general one otherwise (as
    /// [`Config::security_of`] decides).
    pub fn security_section(&self, index: usize) -> Section {
        match self.listeners.get(index) {
            Some(l) if self.per_listener_settings && l.security.is_some() => Section::Listener(index),
            _ => Section::General,
        }
    }
}
