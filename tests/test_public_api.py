import undistro
import undistro.engine
import undistro.fleet
import undistro.policy
import undistro.resources


def test_packages_reexport_their_public_surface() -> None:
    for module in (undistro, undistro.engine, undistro.fleet, undistro.policy, undistro.resources):
        for name in module.__all__:
            assert hasattr(module, name), f"{module.__name__}.{name}"


def test_errors_also_are_the_builtins_they_resemble() -> None:
    assert issubclass(undistro.PolicyError, ValueError)
    assert issubclass(undistro.ValidationError, ValueError)
    assert issubclass(undistro.StateError, OSError)
    assert issubclass(undistro.ApplyError, RuntimeError)
    assert all(
        issubclass(e, undistro.UndistroError)
        for e in (undistro.PolicyError, undistro.StateError, undistro.ApplyError)
    )
