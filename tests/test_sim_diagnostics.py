"""env.diagnostics=true in the simulator: the grasp event against robosuite's own contact query."""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.sim


def test_grasp_and_contact_match_the_simulators_own_query():
    pytest.importorskip("libero")
    from rsdvla.envs.libero import LiberoEnv
    from rsdvla.experts import Phase, PickPlaceExpert

    with LiberoEnv("libero_object", 0, cameras=False, diagnostics=True) as env:
        obs = env.reset(0)
        inner = env.env.env
        gripper = inner.robots[0].gripper
        target = inner.objects_dict[inner.obj_of_interest[0]]
        fingers = gripper.important_geoms["left_finger"] + gripper.important_geoms["right_finger"]
        expert = PickPlaceExpert()
        expert.reset(env, obs)
        grasps, lifted_for = [], 0
        for _ in range(env.task.max_steps):
            before = np.asarray(obs["robot0_eef_pos"], np.float64)
            action = expert.act(obs)
            obs, _, info = env.step(action)
            d = info["diagnostics"]
            assert d["grasp"] == inner._check_grasp(gripper=gripper, object_geoms=target)
            assert d["contact"] == inner.check_contact(fingers, target)
            assert d["gripper_command"] == action[6]
            q = obs["robot0_gripper_qpos"]
            assert d["finger_width"] == pytest.approx(q[0] - q[1], abs=1e-6)
            speed = np.linalg.norm(obs["robot0_eef_pos"] - before) / inner.control_timestep
            assert d["ee_speed"] == pytest.approx(speed, abs=1e-5)
            grasps.append(d["grasp"])
            lifted_for += expert.phase >= Phase.LIFT
            if lifted_for > 5:
                break
    assert not grasps[0] and any(grasps), "the expert's grasp was never seen as a grasp"
    assert grasps[-1], "the object is held while lifting"
