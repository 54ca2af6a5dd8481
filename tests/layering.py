#!/usr/bin/python3
"""The layering check: each top-level folder is a layer, and its #includes and
meson dependencies may point only down the matrix below (STYLE.md
"Dependency direction"; README "Layout"). Also: every layer .c is built, every
included header exists, no folder holds over 30% of the library C/CUDA lines,
and no .c/.h/.cu/.py file anywhere (tests and benchmarks included) is over
800 lines (issue 15).

  layering.py [ROOT]           check the tree at ROOT (default: this file's repo)
  layering.py --shares [ROOT]  the same, after each layer's share of the lines
  layering.py --self-test      check that the checker reports what it should

Each violation is one line, FILE:LINE: ...; the exit code is 1 if there is
any, else 0 after a one-line summary. Python 3 standard library only.
"""
import os
import re
import subprocess
import sys
import tempfile

# The matrix: what each layer may include besides itself and tfdist_config.h.
# One arrow per line, pointing down only. A new folder must be placed here.
ALLOWED = {
    'base': set(),
    'data': {'base'},
    'kernels': {'base'},
    'collective': {'base'},
    'cluster': {'collective', 'base'},
    'model': {'kernels', 'data', 'base'},
    'modelio': {'model', 'kernels', 'data', 'base'},
    'tboard': {'base'},
    'timeline': {'base'},
    'train': {'model', 'modelio', 'kernels', 'data', 'collective', 'cluster', 'tboard', 'timeline',
              'base'},
    'registry': {'modelio', 'model', 'kernels', 'data', 'base'},
    'serve': {'registry', 'modelio', 'model', 'kernels', 'data', 'base'},
    'tune': {'base'},
    'cli': None,  # anything (but cli/ itself is in no one's set)
}
# Single headers (and meson dependencies) a layer may take from a layer it
# otherwise may not include: tune/ takes train's option table and no more.
ALLOWED_HEADERS = {'tune': {'train/train_config.h'}}
ALLOWED_DEPS = {'tune': {'train_config_dep'}}

# Top-level folders that are not layers: they may include any layer.
NOT_LAYERS = {'tests', 'benchmarks'}
# Generated into the build folder by the top meson.build; any layer may include it.
GENERATED = {'tfdist_config.h'}

MAX_FILE_LINES = 800
MAX_FOLDER_SHARE = 0.30
SOURCE_EXT = ('.c', '.h', '.cu')
SIZE_EXT = ('.c', '.h', '.cu', '.py')

INCLUDE_RE = re.compile(r'^\s*#\s*include\s*(["<])([^">]+)[">]')


def may_include(layer, other, header):
    """Whether a file in layer may include header, which lives in other."""
    if other == layer or header in GENERATED or header in ALLOWED_HEADERS.get(layer, ()):
        return True
    allowed = ALLOWED.get(layer, set())
    if allowed is None:  # cli/: anything but itself is below it
        return other != 'cli'
    return other in allowed


def is_build_dir(path):
    return any(os.path.exists(os.path.join(path, m))
               for m in ('meson-private', 'meson-info', 'build.ninja'))


def top_dirs(root):
    """Top-level folders that hold sources: hidden folders and meson build
    folders are skipped."""
    out = []
    for name in sorted(os.listdir(root)):
        path = os.path.join(root, name)
        if name.startswith('.') or not os.path.isdir(path) or is_build_dir(path):
            continue
        out.append(name)
    return out


def walk(root, top, exts):
    """Files under root/top with one of exts, as repo-relative paths, sorted."""
    out = []
    for dirpath, dirnames, filenames in os.walk(os.path.join(root, top)):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith('.')
                             and not is_build_dir(os.path.join(dirpath, d))
                             and d != '__pycache__')
        for f in sorted(filenames):
            if f.endswith(exts):
                out.append(os.path.relpath(os.path.join(dirpath, f), root))
    return out


def read_lines(root, rel):
    with open(os.path.join(root, rel), encoding='utf-8', errors='replace') as f:
        return f.read().split('\n')


def code_lines(lines):
    """The lines with /* */ and // comments blanked, numbering kept, so a
    commented-out #include is not checked."""
    out, in_block = [], False
    for line in lines:
        text, i = [], 0
        while i < len(line):
            if in_block:
                j = line.find('*/', i)
                if j < 0:
                    i = len(line)
                else:
                    in_block, i = False, j + 2
            elif line.startswith('/*', i):
                in_block, i = True, i + 2
            elif line.startswith('//', i):
                break
            elif line[i] == '"':  # skip a string so "/*" inside it is not a comment
                j = i + 1
                while j < len(line) and line[j] != '"':
                    j += 2 if line[j] == '\\' else 1
                text.append(line[i:j + 1])
                i = j + 1
            else:
                text.append(line[i])
                i += 1
        out.append(''.join(text))
    return out


def line_count(root, rel):
    with open(os.path.join(root, rel), 'rb') as f:
        return f.read().count(b'\n')


# --- meson.build parsing: just enough for source lists and dependency lists ---

def strip_meson_comments(text):
    out, quote = [], False
    i = 0
    while i < len(text):
        c = text[i]
        if quote:
            out.append(c)
            if c == '\\' and i + 1 < len(text):
                out.append(text[i + 1])
                i += 1
            elif c == "'":
                quote = False
        elif c == "'":
            quote = True
            out.append(c)
        elif c == '#':
            while i < len(text) and text[i] != '\n':
                i += 1
            continue
        else:
            out.append(c)
        i += 1
    return ''.join(out)


def balanced(text, start):
    """text[start] is an opening bracket; the index just past its match."""
    depth, quote, i = 0, False, start
    while i < len(text):
        c = text[i]
        if quote:
            if c == "'":
                quote = False
        elif c == "'":
            quote = True
        elif c in '([':
            depth += 1
        elif c in ')]':
            depth -= 1
            if depth == 0:
                return i + 1
        i += 1
    return len(text)


def statement_end(text, start):
    """End of the expression starting at start: the first newline or top-level
    comma/closing bracket outside brackets."""
    i = start
    while i < len(text):
        c = text[i]
        if c in '([':
            i = balanced(text, i)
            continue
        if c == "'":
            j = text.find("'", i + 1)
            i = len(text) if j < 0 else j + 1
            continue
        if c in '\n,)]':
            return i
        i += 1
    return len(text)


class MesonFile:
    def __init__(self, root, rel):
        self.rel = rel
        raw = open(os.path.join(root, rel), encoding='utf-8').read()
        self.text = strip_meson_comments(raw)
        self.dir = os.path.dirname(rel)

    def line_of(self, pos):
        return self.text.count('\n', 0, pos) + 1

    def sources(self):
        """Every '....c' / '....cu' string, as a repo-relative path."""
        return {os.path.normpath(os.path.join(self.dir, s))
                for s in re.findall(r"'([^'\n]+\.(?:c|cu))'", self.text)}

    def declared_deps(self):
        return set(re.findall(r'\b(\w+_dep)\s*=\s*declare_dependency\s*\(', self.text))

    def assignments(self):
        """name -> list of (file, line, right-hand side), for = and +=."""
        out = {}
        for m in re.finditer(r'^[ \t]*(\w+)\s*\+?=\s*', self.text, re.M):
            end = statement_end(self.text, m.end())
            out.setdefault(m.group(1), []).append(
                (self.rel, self.line_of(m.start(1)), self.text[m.end():end]))
        return out

    def dependency_args(self):
        """(line, expression) for the dependencies : argument of every
        static_library() and declare_dependency() call."""
        out = []
        for m in re.finditer(r'\b(static_library|declare_dependency)\s*\(', self.text):
            end = balanced(self.text, m.end() - 1)
            call = self.text[m.end():end - 1]
            for d in re.finditer(r'\bdependencies\s*:\s*', call):
                expr_end = statement_end(call, d.end())
                pos = m.end() + d.start()
                out.append((self.line_of(pos), call[d.end():expr_end]))
        return out


def resolve_deps(expr, where, assigns, seen=None):
    """{identifier: (file, line)} for the identifiers an expression names,
    following variables assigned in the folder's meson files (model_deps =
    [...], kernels_deps += ...) to the line that names each."""
    seen = set() if seen is None else seen
    names = {}
    for ident in re.findall(r'\b([A-Za-z_]\w*)\b', re.sub(r"'[^']*'", '', expr)):
        if ident in seen:
            continue
        seen.add(ident)
        for rel, line, rhs in assigns.get(ident, ()):
            for k, v in resolve_deps(rhs, (rel, line), assigns, seen).items():
                names.setdefault(k, v)
        names.setdefault(ident, where)
    return names


# --- the check ---

def check(root):
    errors = []
    tops = top_dirs(root)
    layers = [d for d in tops if d not in NOT_LAYERS and (walk(root, d, SOURCE_EXT) or d in ALLOWED)]
    for d in layers:
        if d not in ALLOWED:
            errors.append('%s/: a folder of C sources that is not in the layer matrix '
                          '(place it in ALLOWED in tests/layering.py)' % d)

    # meson files: which .c are built, and which folder declares which dep
    meson_files = [MesonFile(root, 'meson.build')] if os.path.exists(os.path.join(root, 'meson.build')) else []
    for d in tops:
        meson_files += [MesonFile(root, rel) for rel in walk(root, d, ('meson.build',))
                        if os.path.basename(rel) == 'meson.build']
    built = set()
    dep_owner = {}
    for mf in meson_files:
        built |= mf.sources()
        top = mf.rel.split(os.sep)[0]
        if top in layers:
            for dep in mf.declared_deps():
                dep_owner[dep] = top

    n_includes = 0
    n_files = 0
    lib_lines = {}
    for layer in layers:
        files = walk(root, layer, SOURCE_EXT)
        n_files += len(files)
        for rel in files:
            lib_lines[layer] = lib_lines.get(layer, 0) + line_count(root, rel)
            if layer not in ALLOWED:
                continue  # reported above: no arrows to check it against
            lines = read_lines(root, rel)
            if rel.endswith(('.c', '.cu')) and rel not in built:
                errors.append('%s:1: not listed in any meson.build (every layer source is built)' % rel)
            for no, line in enumerate(code_lines(lines), 1):
                m = INCLUDE_RE.match(line)
                if not m:
                    continue
                quote, header = m.groups()
                first = header.split('/')[0]
                if quote == '<' and not ('/' in header and first in tops):
                    continue  # a system header
                n_includes += 1
                if header in GENERATED:
                    continue
                # "x.h" looks beside the file first, then at the top (top_inc)
                target = None
                if quote == '"':
                    beside = os.path.normpath(os.path.join(os.path.dirname(rel), header))
                    if os.path.isfile(os.path.join(root, beside)):
                        target = beside
                if target is None and os.path.isfile(os.path.join(root, header)):
                    target = os.path.normpath(header)
                if target is None:
                    errors.append('%s:%d: includes "%s", which does not exist' % (rel, no, header))
                    continue
                other = target.split(os.sep)[0] if os.sep in target else '(top)'
                if may_include(layer, other, target.replace(os.sep, '/')):
                    continue
                if other == 'cli':
                    why = 'nothing includes cli/'
                elif any(h.split('/')[0] == other for h in ALLOWED_HEADERS.get(layer, ())):
                    why = '%s -> %s is only %s' % (layer, other, ', '.join(sorted(ALLOWED_HEADERS[layer])))
                else:
                    why = '%s -> %s is not an arrow' % (layer, other)
                errors.append('%s:%d: %s may not include %s (%s)' % (rel, no, layer, header, why))

    # meson dependencies of each layer's libraries
    for mf in meson_files:
        layer = mf.rel.split(os.sep)[0]
        if layer not in layers or ALLOWED.get(layer, set()) is None:
            continue
        folder_files = [f for f in meson_files if f.rel.split(os.sep)[0] == layer]
        assigns = {}
        for f in folder_files:
            for k, v in f.assignments().items():
                assigns.setdefault(k, []).extend(v)
        for line, expr in mf.dependency_args():
            for name, (rel, at) in sorted(resolve_deps(expr, (mf.rel, line), assigns).items()):
                other = dep_owner.get(name)
                if other is None or other == layer:
                    continue
                if name in ALLOWED_DEPS.get(layer, ()) or other in ALLOWED.get(layer, set()):
                    continue
                msg = ('%s:%d: %s may not depend on %s (%s -> %s is not an arrow)'
                       % (rel, at, layer, name, layer, other))
                if msg not in errors:
                    errors.append(msg)

    # sizes: no file over the limit anywhere, no folder over its share
    n_sized = 0
    for d in tops:
        for rel in walk(root, d, SIZE_EXT):
            n_sized += 1
            n = line_count(root, rel)
            if n > MAX_FILE_LINES:
                errors.append('%s:%d: %d lines, over the %d-line limit' % (rel, MAX_FILE_LINES + 1, n, MAX_FILE_LINES))
    total = sum(lib_lines.values())
    for layer in sorted(lib_lines):
        if total and lib_lines[layer] > MAX_FOLDER_SHARE * total:
            errors.append('%s/: %d of the %d library C/CUDA lines (%.1f%%), over the %d%% limit'
                          % (layer, lib_lines[layer], total, 100.0 * lib_lines[layer] / total,
                             round(100 * MAX_FOLDER_SHARE)))
    top_share = max(lib_lines.items(), key=lambda kv: kv[1]) if lib_lines else ('-', 0)
    summary = ('layering: ok: %d layers, %d files, %d includes checked against the matrix; '
               '%d files within %d lines; largest folder %s/ %.1f%% of %d library lines'
               % (len(layers), n_files, n_includes, n_sized, MAX_FILE_LINES, top_share[0],
                  100.0 * top_share[1] / total if total else 0.0, total))
    return errors, summary, lib_lines


# --- the self-test ---

def write(root, rel, text):
    path = os.path.join(root, rel)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, 'w') as f:
        f.write(text)


def clean_tree(root):
    """One .c/.h pair and a meson.build per matrix layer, each taking only what
    it may; equal sizes so no folder is over its share."""
    filler = '/* filler */\n' * 20
    for layer in ALLOWED:
        below = ['base'] if layer not in ('base',) else []
        includes = '#include "%s/%s.h"\n' % (layer, layer)
        includes += ''.join('#include "%s/%s.h"\n' % (b, b) for b in below)
        if layer == 'tune':
            includes += '#include "train/train_config.h"\n'
        write(root, '%s/%s.h' % (layer, layer), '/* %s */\n#include "tfdist_config.h"\n%s' % (layer, filler))
        write(root, '%s/%s.c' % (layer, layer), includes + filler)
        deps = ', '.join('%s_dep' % b for b in below)
        if layer == 'tune':
            deps += ', train_config_dep'
        write(root, '%s/meson.build' % layer,
              "%s_deps = [%s]\n%s_lib = static_library('%s', '%s.c',\n  dependencies : %s_deps)\n"
              "%s_dep = declare_dependency(link_with : %s_lib)\n"
              % (layer, deps, layer, layer, layer, layer, layer, layer))
    write(root, 'train/train_config.h', '/* options */\n')
    write(root, 'train/train_config.c', '#include "train/train_config.h"\n')
    with open(os.path.join(root, 'train/meson.build'), 'a') as f:
        f.write("train_config_dep = declare_dependency(link_with : static_library('tc', 'train_config.c'))\n")
    write(root, 'meson.build', "project('t', 'c')\n")
    write(root, 'tests/test_x.c', '#include "cli/cli.h"\n#include "train/train.h"\n')


def self_test():
    me = os.path.abspath(__file__)
    failures = []

    def run(root):
        p = subprocess.run([sys.executable, me, root], stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, universal_newlines=True)
        return p.returncode, p.stdout

    with tempfile.TemporaryDirectory() as tmp:
        clean = os.path.join(tmp, 'clean')
        clean_tree(clean)
        rc, out = run(clean)
        if rc != 0 or not out.startswith('layering: ok:'):
            failures.append('a clean tree should pass, got rc %d:\n%s' % (rc, out))

        bad = os.path.join(tmp, 'bad')
        clean_tree(bad)
        with open(os.path.join(bad, 'data/data.c'), 'a') as f:
            f.write('#include "kernels/kernels.h"\n')          # sideways
        with open(os.path.join(bad, 'base/base.c'), 'a') as f:
            f.write('/* #include "train/train.h" */\n')        # commented out: not reported
            f.write('#include "data/data.h"\n')                # upward
        with open(os.path.join(bad, 'serve/serve.c'), 'a') as f:
            f.write('#include "cli/cli.h"\n')                  # cli
            f.write('#include "serve/nothere.h"\n')            # missing header
        with open(os.path.join(bad, 'tune/tune.c'), 'a') as f:
            f.write('#include "train/train.h"\n')              # more of train than its table
        write(bad, 'tests/big_test.c', '/* big */\n' * 801)    # oversize, in tests/
        write(bad, 'model/extra.c', '/* unbuilt */\n')         # in no meson.build
        for i in range(3):                                      # model/ over 30%
            write(bad, 'model/m%d.h' % i, '/* m */\n' * 700)
        write(bad, 'misc/misc.c', '#include "base/base.h"\n')  # a folder not placed
        with open(os.path.join(bad, 'registry/meson.build'), 'a') as f:
            f.write("registry_deps += [train_dep]\n")          # meson dep upward
        rc, out = run(bad)
        expect = [
            'data/data.c:23: data may not include kernels/kernels.h (data -> kernels is not an arrow)',
            'base/base.c:23: base may not include data/data.h (base -> data is not an arrow)',
            'serve/serve.c:23: serve may not include cli/cli.h (nothing includes cli/)',
            'serve/serve.c:24: includes "serve/nothere.h", which does not exist',
            'tune/tune.c:24: tune may not include train/train.h (tune -> train is only train/train_config.h)',
            'tests/big_test.c:801: 801 lines, over the 800-line limit',
            'model/extra.c:1: not listed in any meson.build',
            'model/: ',
            'misc/: a folder of C sources that is not in the layer matrix',
            'registry/meson.build:5: registry may not depend on train_dep (registry -> train is not an arrow)',
        ]
        if rc != 1:
            failures.append('a bad tree should exit 1, got %d' % rc)
        for e in expect:
            if not any(line.startswith(e) for line in out.splitlines()):
                failures.append('not reported: %s' % e)
        n_expected = len(expect)
        if len(out.splitlines()) != n_expected:
            failures.append('%d lines reported, %d expected' % (len(out.splitlines()), n_expected))
        if failures:
            failures.append('output on the bad tree:\n' + out)
    if failures:
        print('layering self-test FAILED:\n' + '\n'.join(failures))
        return 1
    print('layering self-test: ok: a clean tree passes; sideways, upward, cli, tune -> train, '
          'missing header, unbuilt .c, unplaced folder, meson dep, oversize file and folder share '
          'are each reported (%d lines)' % n_expected)
    return 0


def main(argv):
    args = argv[1:]
    if args == ['--self-test']:
        return self_test()
    shares = args[:1] == ['--shares']
    if shares:
        args = args[1:]
    if len(args) > 1 or args and args[0].startswith('-'):
        print('usage: layering.py [--shares] [ROOT] | --self-test', file=sys.stderr)
        return 2
    root = args[0] if args else os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    errors, summary, lib_lines = check(root)
    if shares:  # each layer's part of the library lines, largest first
        total = sum(lib_lines.values())
        for layer, n in sorted(lib_lines.items(), key=lambda kv: -kv[1]):
            print('%-12s %6d  %5.1f%%' % (layer + '/', n, 100.0 * n / total))
        print('%-12s %6d' % ('total', total))
    for e in errors:
        print(e)
    if errors:
        return 1
    print(summary)
    return 0


if __name__ == '__main__':
    sys.exit(main(sys.argv))
