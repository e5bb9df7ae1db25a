"""Recipe parsing and validation, without any VM."""

from __future__ import annotations

import pytest

from imagebuilder import recipe
from imagebuilder.arches import ARCHES
from imagebuilder.errors import RecipeError
from imagebuilder.guest import sysprep

MINIMAL = '[image]\nname = "web"\n[base.bootstrap]\n'


def write(tmp_path, text: str):
    path = tmp_path / "recipe.toml"
    path.write_text(text)
    return path


def error_of(tmp_path, text: str) -> RecipeError:
    with pytest.raises(RecipeError) as info:
        recipe.load(write(tmp_path, text))
    return info.value


def test_minimal_recipe_defaults(tmp_path):
    loaded = recipe.load(write(tmp_path, MINIMAL))
    assert loaded.name == "web"
    assert loaded.base.kind == "bootstrap" and loaded.base.bootstrap.suite == "bookworm"
    assert loaded.disk.format == "qcow2" and loaded.disk.size is None
    assert loaded.output.libvirt and loaded.output.pool == "default" and loaded.output.volume == "web.qcow2"
    assert loaded.domain is None
    assert loaded.sysprep == tuple(sysprep.defaults())
    assert {"machine-id", "ssh-hostkeys", "logfiles", "tmp-files", "bash-history"} <= set(loaded.sysprep)
    assert loaded.network is False


def test_full_recipe(tmp_path):
    (tmp_path / "pw").write_text("secret\n")
    loaded = recipe.load(write(tmp_path, MINIMAL + """
[disk]
size = "8G"
format = "raw"
[[steps]]
install = ["nginx", "curl"]
[[steps]]
root_password = { file = "pw" }
[sysprep]
operations = ["-logfiles"]
[output]
path = "out/web.raw"
volume = "web-1.raw"
[domain]
memory = "2GiB"
vcpus = 2
network = "none"
timeout = "5m"
"""))
    assert loaded.disk.size == 8 << 30
    assert [s.op for s in loaded.steps] == ["install", "root_password"]
    assert loaded.steps[0].arg == ("nginx", "curl")
    assert loaded.steps[0].line == 9
    assert loaded.network is True
    assert loaded.sysprep == tuple(n for n in sysprep.defaults() if n != "logfiles")
    assert loaded.output.path == (tmp_path / "out" / "web.raw").resolve()
    assert loaded.output.libvirt and loaded.output.volume == "web-1.raw"
    assert loaded.domain.memory == 2 << 30 and loaded.domain.network is None and loaded.domain.timeout == 300
    assert "secret" not in loaded.steps[1].describe()


def test_file_only_output_has_no_libvirt(tmp_path):
    loaded = recipe.load(write(tmp_path, MINIMAL + '[output]\npath = "x.qcow2"\n'))
    assert not loaded.output.libvirt


@pytest.mark.parametrize("text, line, key, problem", [
    ('[image]\nname = "web"\n', None, "base", "missing required section"),
    (MINIMAL + '[disk]\nsize = "8 GB"\n', 5, "disk.size", "is not a size"),
    (MINIMAL + '[disk]\nsize = "-1G"\n', 5, "disk.size", "is not a size"),
    (MINIMAL + '[disk]\nformat = "vmdk"\n', 5, "disk.format", "not one of qcow2, raw"),
    (MINIMAL + '[domain]\nvcpus = "2"\n', 5, "domain.vcpus", "expected an integer, got a string"),
    (MINIMAL + '[domain]\nstart = 1\n', 5, "domain.start", "expected true or false"),
    (MINIMAL + '[[steps]]\nhostnme = "x"\n', 5, "steps[0].hostnme", "did you mean 'hostname'"),
    (MINIMAL + '[[steps]]\nhostname = "a"\ntimezone = "UTC"\n', 4, "steps[0]", "one operation per step"),
    (MINIMAL + '[[steps]]\nhostname = "bad_name!"\n', 5, "steps[0].hostname", "not a valid host name"),
    (MINIMAL + '[[steps]]\nupload = "missing.txt:/x"\n', 5, "steps[0].upload", "does not exist"),
    (MINIMAL + '[[steps]]\nwrite = "relative:content"\n', 5, "steps[0].write", "must be absolute"),
    (MINIMAL + '[[steps]]\ninstall = ["ok", "bad;rm"]\n', 5, "steps[0].install", "not a package name"),
    (MINIMAL + '[[steps]]\nroot_password = "rnd"\n', 5, "steps[0].root_password", "not a password selector"),
    (MINIMAL + '[[steps]]\nupload = "gone.txt:/x"\n', 5, "steps[0].upload", "does not exist"),
    (MINIMAL + '[[steps]]\ninstall = ["x"]\n[customize]\nnetwork = false\n', 7, "customize.network",
     "needs the appliance network"),
    (MINIMAL + '[customize]\nnetwrk = true\n', 5, "customize.netwrk", "did you mean 'network'"),
    (MINIMAL + '[[steps]]\nupdate = false\n', 5, "steps[0].update", "takes no argument"),
    ('[image]\nname = "web"\n[base]\nurl = "http://x/y.img"\n', 3, "base.checksum", "needs checksum"),
    ('[image]\nname = "web"\n[base]\nurl = "http://x/y"\nchecksum = "sha256:abc"\n', 5, "base.checksum",
     "has 64 hex digits"),
    ('[image]\nname = "web"\n[base]\nurl = "http://x/y"\npath = "z"\n', 5, "base.path", "exclude each other"),
    ('[image]\nname = "web"\n[base]\npath = "nope.qcow2"\n', 4, "base.path", "does not exist"),
    (MINIMAL + '[output]\nvolume = "a/b"\n', 5, "output.volume", "not a valid volume name"),
    (MINIMAL + '[output]\npath = "x.qcow2"\n[domain]\n', 6, "domain", "needs the image in a libvirt pool"),
    (MINIMAL + '[sysprep]\noperations = ["bogus"]\n', 5, "sysprep.operations", "not a sysprep operation"),
    (MINIMAL + 'colour = "blue"\n', 4, "base.bootstrap.colour", "unknown key"),
    ('[image]\nname = "web"\n[imgae]\n', 3, "imgae", "did you mean 'image'"),
])
def test_errors_name_line_and_key(tmp_path, text, line, key, problem):
    err = error_of(tmp_path, text)
    assert err.line == line
    assert err.key == key
    assert problem in err.problem
    assert err.exit_code == 2
    assert str(err).startswith(f"{tmp_path / 'recipe.toml'}:{line}: " if line else f"{tmp_path / 'recipe.toml'}: ")


def test_invalid_toml_reports_its_line(tmp_path):
    err = error_of(tmp_path, '[image]\nname = "web"\nbroken = \n')
    assert err.line == 3 and "invalid TOML" in err.problem


def test_inline_secret_is_not_in_descriptions(tmp_path):
    loaded = recipe.load(write(tmp_path, MINIMAL + '[[steps]]\nroot_password = "password:hunter2"\n'))
    assert "hunter2" not in loaded.steps[0].describe()


def test_compression_is_for_qcow2_only(tmp_path):
    assert recipe.load(write(tmp_path, MINIMAL + '[disk]\ncompress = true\n')).disk.compress
    err = error_of(tmp_path, MINIMAL + '[disk]\nformat = "raw"\ncompress = true\n')
    assert err.key == "disk.compress" and err.line == 6


def test_bootstrap_kernel_replaces_the_distributions_generic_one(tmp_path):
    from imagebuilder.sources import bootstrap
    x86 = ARCHES["x86_64"]
    boot = '[image]\nname = "web"\narch = "x86_64"\n[base.bootstrap]\nsuite = "bookworm"\n'
    generic = recipe.load(write(tmp_path, boot)).base.bootstrap
    cloud = recipe.load(write(tmp_path, boot + 'kernel = "linux-image-cloud-amd64"\n')).base.bootstrap
    include = {arg for arg in bootstrap.command(cloud, "T", x86) if arg.startswith("--include=")}.pop()
    assert generic.kernel is None and "linux-image-amd64," in {a for a in bootstrap.command(generic, "T", x86)
                                                               if a.startswith("--include=")}.pop()
    assert include.startswith("--include=linux-image-cloud-amd64,") and "linux-image-amd64" not in include
    error = error_of(tmp_path, boot + 'kernel = "linux-image-amd64, linux-image-cloud-amd64"\n')
    assert "recipe.toml:6: key 'base.bootstrap.kernel'" in str(error) and "expected one kernel package, got 2" in str(error)
