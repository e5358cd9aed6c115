//! Property test: random sequences of schema changes, applied to the pure rules, give the same
//! accept/reject answers and the same catalog as a small, obviously-correct model; replaying the
//! log of accepted changes rebuilds the same catalog.

mod common;

use std::collections::BTreeMap;

use common::int;
use memotag::schema::Plan;
use memotag::{Catalog, FunctionSpec, InputSpec, SchemaChange};
use proptest::prelude::*;

const NAMES: &[&str] = &["f", "g", "h"];
const INPUTS: &[&str] = &["a", "b", "c", "d"];

#[derive(Clone, Debug)]
enum Op {
    Create {
        name: usize,
        version: u32,
        inputs: Vec<(usize, Option<i64>)>,
        new_family: bool,
    },
    AddInput {
        name: usize,
        version: u32,
        input: usize,
        default: Option<i64>,
    },
    Rename {
        from: usize,
        to: usize,
    },
    RenameInput {
        name: usize,
        version: u32,
        from: usize,
        to: usize,
    },
}

fn op() -> impl Strategy<Value = Op> {
    let default = prop::option::of(0i64..3);
    prop_oneof![
        (
            0..3usize,
            1..3u32,
            prop::collection::btree_map(0..4usize, default.clone(), 0..3),
            any::<bool>()
        )
            .prop_map(|(name, version, inputs, new_family)| Op::Create {
                name,
                version,
                inputs: inputs.into_iter().collect(),
                new_family,
            }),
        (0..3usize, 1..3u32, 0..4usize, default).prop_map(|(name, version, input, default)| {
            Op::AddInput {
                name,
                version,
                input,
                default,
            }
        }),
        (0..3usize, 0..3usize).prop_map(|(from, to)| Op::Rename { from, to }),
        (0..3usize, 1..3u32, 0..4usize, 0..4usize).prop_map(|(name, version, from, to)| {
            Op::RenameInput {
                name,
                version,
                from,
                to,
            }
        }),
    ]
}

/// The model: families by current name, with former names, versions and inputs (name, default).
#[derive(Clone, Debug, Default, PartialEq)]
struct Model {
    families: Vec<ModelFamily>,
}

#[derive(Clone, Debug, PartialEq)]
struct ModelFamily {
    name: String,
    former: Vec<String>,
    versions: BTreeMap<u32, Vec<(String, Option<i64>)>>,
    /// Per version: the inputs it was created with, under their original names.
    created_with: BTreeMap<u32, Vec<(String, Option<i64>)>>,
    /// Per version: the first name of every input, in position order.
    first_names: BTreeMap<u32, Vec<String>>,
    /// Per version: every name any of its inputs ever had (a former one binds to that input,
    /// so adding an input under it is refused).
    input_names: BTreeMap<u32, Vec<String>>,
}

/// A create is a retry of the one that made this version if it names every current input, or
/// the inputs the version was created with, each under its current or its first name, with the
/// same defaults.
fn is_retry(
    current: &[(String, Option<i64>)],
    first_names: &[String],
    created: usize,
    request: &[(String, Option<i64>)],
) -> bool {
    let matches =
        |n: usize| {
            n == request.len()
                && current[..n].iter().zip(&first_names[..n]).zip(request).all(
                    |(((now, d), first), (want, wd))| d == wd && (now == want || first == want),
                )
        };
    matches(current.len()) || matches(created)
}

#[derive(Debug, PartialEq)]
enum Answer {
    Applied,
    AlreadyApplied,
    Rejected,
    Skipped,
}

impl Model {
    fn family(&self, name: &str) -> Option<usize> {
        self.families.iter().position(|f| f.name == name)
    }

    fn step(&mut self, op: &Op) -> Answer {
        match op {
            Op::Create {
                name,
                version,
                inputs,
                new_family,
            } => {
                let name = NAMES[*name];
                let inputs: Vec<_> = inputs
                    .iter()
                    .map(|(i, d)| (INPUTS[*i].to_string(), *d))
                    .collect();
                if let Some(i) = self.family(name) {
                    let family = &mut self.families[i];
                    return match family.versions.get(version) {
                        Some(existing)
                            if is_retry(
                                existing,
                                &family.first_names[version],
                                family.created_with[version].len(),
                                &inputs,
                            ) =>
                        {
                            Answer::AlreadyApplied
                        }
                        Some(_) => Answer::Rejected,
                        None => {
                            let names: Vec<String> =
                                inputs.iter().map(|(n, _)| n.clone()).collect();
                            family.input_names.insert(*version, names.clone());
                            family.first_names.insert(*version, names);
                            family.versions.insert(*version, inputs.clone());
                            family.created_with.insert(*version, inputs);
                            Answer::Applied
                        }
                    };
                }
                let former = self
                    .families
                    .iter()
                    .any(|f| f.former.iter().any(|n| n == name));
                if former && !new_family {
                    return Answer::Rejected;
                }
                self.families.push(ModelFamily {
                    name: name.to_string(),
                    former: vec![],
                    versions: BTreeMap::from([(*version, inputs.clone())]),
                    first_names: BTreeMap::from([(
                        *version,
                        inputs.iter().map(|(n, _)| n.clone()).collect(),
                    )]),
                    input_names: BTreeMap::from([(
                        *version,
                        inputs.iter().map(|(n, _)| n.clone()).collect(),
                    )]),
                    created_with: BTreeMap::from([(*version, inputs)]),
                });
                Answer::Applied
            }
            Op::AddInput {
                name,
                version,
                input,
                default,
            } => {
                let Some(i) = self.family(NAMES[*name]) else {
                    return Answer::Skipped;
                };
                let Some(inputs) = self.families[i].versions.get_mut(version) else {
                    return Answer::Skipped;
                };
                let input = INPUTS[*input];
                if let Some((_, existing)) = inputs.iter().find(|(n, _)| n == input) {
                    return match (existing, default) {
                        (Some(a), Some(b)) if a == b => Answer::AlreadyApplied,
                        _ => Answer::Rejected,
                    };
                }
                let family = &self.families[i];
                if default.is_none() || family.input_names[version].iter().any(|n| n == input) {
                    return Answer::Rejected;
                }
                let family = &mut self.families[i];
                let inputs = family.versions.get_mut(version).expect("version exists");
                inputs.push((input.to_string(), *default));
                family
                    .input_names
                    .get_mut(version)
                    .expect("version exists")
                    .push(input.to_string());
                family
                    .first_names
                    .get_mut(version)
                    .expect("version exists")
                    .push(input.to_string());
                Answer::Applied
            }
            Op::Rename { from, to } => {
                let Some(i) = self.family(NAMES[*from]) else {
                    return Answer::Skipped;
                };
                if from == to {
                    return Answer::AlreadyApplied;
                }
                if self.family(NAMES[*to]).is_some() {
                    return Answer::Rejected;
                }
                let f = &mut self.families[i];
                f.former.push(f.name.clone());
                f.name = NAMES[*to].to_string();
                Answer::Applied
            }
            Op::RenameInput {
                name,
                version,
                from,
                to,
            } => {
                let Some(i) = self.family(NAMES[*name]) else {
                    return Answer::Skipped;
                };
                let Some(inputs) = self.families[i].versions.get_mut(version) else {
                    return Answer::Skipped;
                };
                let Some(pos) = inputs.iter().position(|(n, _)| n == INPUTS[*from]) else {
                    return Answer::Skipped;
                };
                if from == to {
                    return Answer::AlreadyApplied;
                }
                if inputs.iter().any(|(n, _)| n == INPUTS[*to]) {
                    return Answer::Rejected;
                }
                inputs[pos].0 = INPUTS[*to].to_string();
                self.families[i]
                    .input_names
                    .get_mut(version)
                    .expect("version exists")
                    .push(INPUTS[*to].to_string());
                Answer::Applied
            }
        }
    }
}

/// Translates a name-based op into a tag-based change against the catalog, or `None` if the
/// thing it names does not exist (the model skips those too).
fn change(catalog: &Catalog, op: &Op) -> Option<SchemaChange> {
    let function = |name: usize, version: u32| catalog.function_named(NAMES[name], version);
    Some(match op {
        Op::Create {
            name,
            version,
            inputs,
            new_family,
        } => SchemaChange::CreateFunction(FunctionSpec {
            name: NAMES[*name].to_string(),
            version: *version,
            inputs: inputs
                .iter()
                .map(|(i, d)| InputSpec {
                    name: INPUTS[*i].to_string(),
                    default: d.map(int),
                })
                .collect(),
            outputs: vec!["out".to_string()],
            new_family: *new_family,
        }),
        Op::AddInput {
            name,
            version,
            input,
            default,
        } => SchemaChange::AddInput {
            function: function(*name, *version)?.tag,
            name: INPUTS[*input].to_string(),
            default: default.map(int),
        },
        Op::Rename { from, to } => SchemaChange::RenameFunction {
            family: catalog.family_named(NAMES[*from])?.tag,
            to: NAMES[*to].to_string(),
        },
        Op::RenameInput {
            name,
            version,
            from,
            to,
        } => SchemaChange::RenameInput {
            input: function(*name, *version)?.input_named(INPUTS[*from])?.tag,
            to: INPUTS[*to].to_string(),
        },
    })
}

/// Families by name, each with its versions and their inputs (name, default).
type Projection = Vec<(String, Vec<(u32, Vec<(String, Option<memotag::ValueId>)>)>)>;

/// The catalog seen the way the model sees it.
fn project(catalog: &Catalog) -> Projection {
    let mut out: Vec<_> = catalog
        .families()
        .map(|fam| {
            let versions = fam
                .versions
                .iter()
                .map(|(v, tag)| {
                    let f = catalog.function(*tag).unwrap();
                    (
                        *v,
                        f.inputs
                            .iter()
                            .map(|i| (i.name.clone(), i.default))
                            .collect(),
                    )
                })
                .collect();
            (fam.name.clone(), versions)
        })
        .collect();
    out.sort();
    out
}

fn project_model(model: &Model) -> Projection {
    let mut out: Vec<_> = model
        .families
        .iter()
        .map(|f| {
            let versions = f
                .versions
                .iter()
                .map(|(v, inputs)| {
                    (
                        *v,
                        inputs
                            .iter()
                            .map(|(n, d)| (n.clone(), d.map(|d| int(d).id())))
                            .collect(),
                    )
                })
                .collect();
            (f.name.clone(), versions)
        })
        .collect();
    out.sort();
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    #[test]
    fn rules_agree_with_the_model(ops in prop::collection::vec(op(), 1..40)) {
        let mut catalog = Catalog::new();
        let mut model = Model::default();
        let mut log = Vec::new();
        let mut counter = 0u128;
        let mut new_tag = || { counter += 1; uuid::Uuid::from_u128(counter) };
        for op in &ops {
            let expected = model.step(op);
            let answer = match change(&catalog, op) {
                None => Answer::Skipped,
                Some(change) => match catalog.plan(&change, &mut new_tag) {
                    Ok(Plan::AlreadyApplied) => Answer::AlreadyApplied,
                    Ok(Plan::Apply(logged)) => {
                        let seq = catalog.seq() + 1;
                        catalog.apply(seq, &logged).unwrap();
                        log.push((seq, logged));
                        Answer::Applied
                    }
                    Err(_) => Answer::Rejected,
                },
            };
            prop_assert_eq!(&answer, &expected, "op {:?}", op);
        }
        prop_assert_eq!(project(&catalog), project_model(&model));
        let replayed = Catalog::replay(log.iter().map(|(s, c)| (*s, c))).unwrap();
        prop_assert_eq!(replayed, catalog);
    }
}
